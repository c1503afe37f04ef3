//! STATUS (spec 1.1.0): ready for ADD once weftd has written subnet.env
//! (the node holds its subnet); else error 50, "plugin not available".
//! Nothing else can keep an ADD from working that STATUS could see
//! beforehand: the bridge and the directories are made by ADD.
use crate::{
    config::NetConf,
    error::{code, CniError, Result},
    subnet_env,
};

pub fn status(conf: &NetConf) -> Result<()> {
    subnet_env::read(&conf.subnet_file)
        .map(|_| ())
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, format!("weft-cni cannot add pods: {}", e.msg)).with_details(e.details))
}
