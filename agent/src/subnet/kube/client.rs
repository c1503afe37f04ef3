//! The Kubernetes client weftd's flags describe, and our Node's name.
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::Api,
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

use crate::cli::Args;

/// A client from `--kubeconfig-file` (its server replaced by
/// `--kube-api-url` if given), else the in-cluster service account, else
/// `--kube-api-url` alone.
pub async fn client(args: &Args) -> Result<Client> {
    let mut config = match &args.kubeconfig_file {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).with_context(|| format!("--kubeconfig-file {}", p.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.with_context(|| format!("--kubeconfig-file {}", p.display()))?
        }
        None => match (Config::incluster(), &args.kube_api_url) {
            (Ok(c), _) => c,
            (Err(_), Some(u)) => Config::new(u.parse().with_context(|| format!("--kube-api-url {u:?}"))?),
            (Err(e), None) => bail!("--kube-subnet-mgr: no --kubeconfig-file and no in-cluster service account ({e}); pass --kubeconfig-file or run in a pod"),
        },
    };
    if let Some(u) = &args.kube_api_url {
        config.cluster_url = u.parse().with_context(|| format!("--kube-api-url {u:?}"))?;
    }
    Client::try_from(config).context("building the Kubernetes client")
}

/// Our Node's name: NODE_NAME, else the spec.nodeName of POD_NAME in
/// POD_NAMESPACE (flannel's order; needs RBAC `pods get`).
pub async fn node_name(client: &Client) -> Result<String> {
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.is_empty() {
            return Ok(n);
        }
    }
    let (Ok(pod), Ok(ns)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
        bail!("--kube-subnet-mgr needs the node's name: set NODE_NAME (or POD_NAME and POD_NAMESPACE)");
    };
    let p = Api::<Pod>::namespaced(client.clone(), &ns).get(&pod).await.with_context(|| format!("reading pod {ns}/{pod} for its node"))?;
    p.spec.and_then(|s| s.node_name).with_context(|| format!("pod {ns}/{pod} has no spec.nodeName"))
}
