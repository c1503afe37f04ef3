//! Where weftd pins its maps and links under `--bpf-pin-dir`:
//! `<pin-dir>/<LAYOUT>/<map name>` and `<pin-dir>/<LAYOUT>/links/<prog>-<ifindex>`.
//! The layout version is part of the path because aya reopens a pinned map
//! without checking its layout, so a change to a map's key or value must
//! bump it (an old weftd's pins are then left alone, not misread).

/// Layout version of the pinned maps. v2: the host-gw fast path's map and
/// counters.
pub const LAYOUT: &str = "v2";

/// Directory of the pinned links, under [`LAYOUT`].
pub const LINKS: &str = "links";

#[cfg(feature = "std")]
mod paths {
    use std::path::{Path, PathBuf};

    /// `<pin_root>/v2`: the maps (by their names in [`crate::map_names`]).
    pub fn dir(pin_root: &Path) -> PathBuf {
        pin_root.join(super::LAYOUT)
    }

    /// `<pin_root>/v2/links`
    pub fn links_dir(pin_root: &Path) -> PathBuf {
        dir(pin_root).join(super::LINKS)
    }

    /// A link's pin name: `<prog>-<ifindex>`.
    pub fn link_name(prog: &str, ifindex: u32) -> String {
        format!("{prog}-{ifindex}")
    }

    /// The ifindex of `prog`'s link pinned as `name`, if it is one.
    pub fn link_ifindex(name: &str, prog: &str) -> Option<u32> {
        name.strip_prefix(prog)?.strip_prefix('-')?.parse().ok()
    }
}
#[cfg(feature = "std")]
pub use paths::*;

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn layout() {
        assert_eq!(dir(Path::new("/sys/fs/bpf/weft")), Path::new("/sys/fs/bpf/weft/v2"));
        assert_eq!(links_dir(Path::new("/p")), Path::new("/p/v2/links"));
        assert_eq!(link_name("weft_fwd", 7), "weft_fwd-7");
        assert_eq!(link_ifindex("weft_fwd-7", "weft_fwd"), Some(7));
        assert_eq!(link_ifindex("weft_fwd-x", "weft_fwd"), None);
        assert_eq!(link_ifindex("weft_from_pod-7", "weft_fwd"), None);
    }
}
