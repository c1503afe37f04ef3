//! subnet.env, read by the CNI plugin: written as flanneld writes it
//! (temporary file, then rename, so a reader never sees half a file).
use std::{io::Write, path::Path};

use anyhow::{Context, Result};

use crate::subnet::Ipv4Net;

pub struct SubnetEnv {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            self.subnet.nth(1),
            self.subnet.prefix_len(),
            self.mtu,
            self.ipmasq
        )
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("subnet.env")));
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(self.render().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }
}

/// FLANNEL_SUBNET of an existing subnet.env, as a subnet (for lease reuse).
pub fn previous_subnet(path: &Path) -> Option<Ipv4Net> {
    let text = std::fs::read_to_string(path).ok()?;
    let v = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
    v.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_flanneld_and_reads_back() {
        let env = SubnetEnv { network: "10.244.0.0/16".parse().unwrap(), subnet: "10.244.73.0/24".parse().unwrap(), mtu: 1450, ipmasq: false };
        assert_eq!(env.render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.73.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let dir = std::env::temp_dir().join(format!("weft-subnet-env-{}", std::process::id()));
        let path = dir.join("subnet.env");
        env.write(&path).unwrap();
        assert_eq!(previous_subnet(&path), Some("10.244.73.0/24".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
