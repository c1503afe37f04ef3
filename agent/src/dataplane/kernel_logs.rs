//! The kernel programs' own log lines (aya-log), printed by weftd while
//! `weftd log-level debug` has them on; idle otherwise.
use super::Datapath;

/// Passes the programs' log records to weftd's logger at info level under
/// the target `weft_kernel`: they exist only while `weftd log-level debug`
/// has them on, so weftd's own level filter must not hide them.
pub struct KernelLogs;

impl log::Log for KernelLogs {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        log::logger().log(&log::Record::builder().args(*r.args()).level(log::Level::Info).target("weft_kernel").build());
    }
    fn flush(&self) {
        log::logger().flush()
    }
}

/// Prints what the kernel programs log, on a task of its own.
pub fn spawn(dp: &mut Datapath) {
    let Some(logger) = dp.take_logger() else { return };
    // SAFETY: the logger owns its ring buffer's fd, open and unchanged for
    // as long as the AsyncFd (which owns the logger) lives.
    let mut fd = match unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => return log::warn!("kernel-side logs unavailable: {}", e.into_parts().1),
    };
    tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => return log::warn!("kernel-side logs stopped: {e}"),
            }
        }
    });
}
