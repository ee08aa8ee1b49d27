//! What the end-to-end benchmarks share: the command lines of the `edgekv`
//! servers they start, each on free ports of 127.0.0.1, in the `bench`
//! environment.

pub mod writes;

/// Arguments as `Command::args` and the benchmarks' helpers take them.
pub fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `edgekv origin` serving one build (`b1`) from `data_dir`.
pub fn origin_args(data_dir: &str, credential_file: &str) -> Vec<String> {
    [
        "origin",
        "--data-dir",
        data_dir,
        "--environment",
        "bench",
        "--credential-file",
        credential_file,
        "--build",
        "b1=127.0.0.1:0",
    ]
    .map(String::from)
    .into()
}

/// `edgekv edge` following `origin`, admitting `token` to `account`'s
/// namespaces, with a hot tier of `hot_tier_bytes`.
pub fn edge_args(
    origin: &str,
    credential_file: &str,
    data_dir: &str,
    account: &str,
    token: &str,
    hot_tier_bytes: &str,
) -> Vec<String> {
    [
        "edge",
        "--origin",
        origin,
        "--environment",
        "bench",
        "--credential-file",
        credential_file,
        "--data-dir",
        data_dir,
        "--http",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--account",
        account,
        "--token",
        token,
        "--hot-tier-bytes",
        hot_tier_bytes,
    ]
    .map(String::from)
    .into()
}
