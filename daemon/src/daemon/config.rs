//! The daemon's settings: embedded defaults, overridden by an optional TOML file
//! (`--config FILE`) and by `--listen`.
//!
//! ```toml
//! listen = "0.0.0.0:7470"          # not loopback: a bearer token is required
//! token_file = "/etc/loupe/token"  # or token_env = "LOUPE_TOKEN"
//! window = "10s"
//! retention = "1h"
//! store_max_bytes = 67108864
//! cpu_frequency_hz = 19
//! offcpu_stacks = false          # true: the offcpu flame graph (costs ~15% on switch-heavy hosts)
//! metrics_top_processes = 20
//! live_profiles = 2
//! max_profile_seconds = 300
//! live_frequency_hz = 99
//! goroutine_census_interval = "30s"   # "0s": no periodic census (the API still answers)
//! goroutine_census_processes = 20     # Go processes per round (default metrics_top_processes)
//! goroutine_leak_threshold = "1m"
//! ```

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{field}: `{value}` is not a duration like 10s, 5m or 1h")]
    Duration { field: &'static str, value: String },
    #[error("{field} must be {what}")]
    Range {
        field: &'static str,
        what: &'static str,
    },
    #[error("listen address `{0}` is not IP:PORT (for example 127.0.0.1:7470)")]
    Listen(String),
    #[error(
        "refusing to listen on {addr}: it is not a loopback address, and no bearer token is \
         configured; set token_file or token_env in the config file (--config), or listen on \
         127.0.0.1"
    )]
    TokenRequired { addr: SocketAddr },
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token {0} is empty")]
    EmptyToken(String),
    #[error("token_env names {0}, which is not set")]
    TokenEnv(String),
}

/// The file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    window: Option<String>,
    retention: Option<String>,
    store_max_bytes: Option<u64>,
    cpu_frequency_hz: Option<u64>,
    offcpu_stacks: Option<bool>,
    metrics_top_processes: Option<usize>,
    live_profiles: Option<usize>,
    max_profile_seconds: Option<u64>,
    live_frequency_hz: Option<u64>,
    goroutine_census_interval: Option<String>,
    goroutine_census_processes: Option<usize>,
    goroutine_leak_threshold: Option<String>,
}

/// Resolved settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Required on every request (`Authorization: Bearer ...`) when set.
    pub token: Option<String>,
    /// How often a window is taken and stored.
    pub window: Duration,
    pub retention: Duration,
    /// Cap on the estimated bytes of stored windows; the oldest go first.
    pub store_max_bytes: u64,
    pub cpu_frequency_hz: u64,
    /// Off-CPU stacks (the `offcpu` flame graph); the per-thread totals run regardless.
    pub offcpu_stacks: bool,
    /// Processes with their own series in `/metrics`; the rest are summed under `other`.
    pub metrics_top_processes: usize,
    /// Live `/debug/pprof/profile` requests at once; more get 429.
    pub live_profiles: usize,
    pub max_profile_seconds: u64,
    pub live_frequency_hz: u64,
    /// How often the goroutines of Go processes are counted for `/metrics`; None: never.
    pub goroutine_census_interval: Option<Duration>,
    /// Go processes counted per round at most (those with the most CPU first).
    pub goroutine_census_processes: usize,
    /// A goroutine blocked longer than this is a leak suspect.
    pub goroutine_leak_threshold: Duration,
}

impl Config {
    /// Defaults, then `path`'s keys, then `listen` (the command line wins).
    pub fn load(path: Option<&Path>, listen: Option<&str>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<File>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?
            }
            None => File::default(),
        };
        Config::resolve(file, listen)
    }

    fn resolve(file: File, listen: Option<&str>) -> Result<Config, ConfigError> {
        let listen_text = listen
            .map(str::to_string)
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let token = token(&file)?;
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::TokenRequired { addr: listen });
        }
        let window = duration("window", file.window.as_deref(), "10s")?;
        let retention = duration("retention", file.retention.as_deref(), "1h")?;
        if window < Duration::from_secs(1) {
            return Err(ConfigError::Range {
                field: "window",
                what: "at least 1s",
            });
        }
        if retention < window {
            return Err(ConfigError::Range {
                field: "retention",
                what: "at least one window",
            });
        }
        let hz = |field, value: Option<u64>, default| match value.unwrap_or(default) {
            hz @ 1..=1000 => Ok(hz),
            _ => Err(ConfigError::Range {
                field,
                what: "between 1 and 1000 Hz",
            }),
        };
        let census_interval = duration(
            "goroutine_census_interval",
            file.goroutine_census_interval.as_deref(),
            "30s",
        )?;
        if !census_interval.is_zero() && census_interval < Duration::from_secs(1) {
            return Err(ConfigError::Range {
                field: "goroutine_census_interval",
                what: "0s (off) or at least 1s",
            });
        }
        let leak_threshold = duration(
            "goroutine_leak_threshold",
            file.goroutine_leak_threshold.as_deref(),
            "1m",
        )?;
        let metrics_top_processes = file.metrics_top_processes.unwrap_or(20);
        Ok(Config {
            listen,
            token,
            window,
            retention,
            store_max_bytes: file.store_max_bytes.unwrap_or(64 << 20),
            cpu_frequency_hz: hz("cpu_frequency_hz", file.cpu_frequency_hz, 19)?,
            offcpu_stacks: file.offcpu_stacks.unwrap_or(false),
            metrics_top_processes,
            live_profiles: match file.live_profiles.unwrap_or(2) {
                0 => {
                    return Err(ConfigError::Range {
                        field: "live_profiles",
                        what: "at least 1",
                    })
                }
                n => n,
            },
            max_profile_seconds: file.max_profile_seconds.unwrap_or(300).max(1),
            live_frequency_hz: hz("live_frequency_hz", file.live_frequency_hz, 99)?,
            goroutine_census_interval: (!census_interval.is_zero()).then_some(census_interval),
            goroutine_census_processes: file
                .goroutine_census_processes
                .unwrap_or(metrics_top_processes),
            goroutine_leak_threshold: leak_threshold,
        })
    }
}

fn duration(
    field: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = value.unwrap_or(default);
    humantime::parse_duration(text).map_err(|_| ConfigError::Duration {
        field,
        value: text.to_string(),
    })
}

fn token(file: &File) -> Result<Option<String>, ConfigError> {
    let token = if let Some(path) = &file.token_file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
            path: path.clone(),
            source,
        })?;
        Some((text.trim().to_string(), format!("file {}", path.display())))
    } else if let Some(var) = &file.token_env {
        let value = std::env::var(var).map_err(|_| ConfigError::TokenEnv(var.clone()))?;
        Some((value.trim().to_string(), format!("variable {var}")))
    } else {
        None
    };
    match token {
        Some((t, from)) if t.is_empty() => Err(ConfigError::EmptyToken(from)),
        Some((t, _)) => Ok(Some(t)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, listen: Option<&str>) -> Result<Config, ConfigError> {
        Config::resolve(toml::from_str(text).expect("toml"), listen)
    }

    #[test]
    fn defaults_listen_on_loopback_without_a_token() {
        let c = parse("", None).expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.window, Duration::from_secs(10));
        assert_eq!(c.retention, Duration::from_secs(3600));
        assert_eq!(c.store_max_bytes, 64 << 20);
        assert_eq!(c.cpu_frequency_hz, 19);
        assert_eq!(c.goroutine_census_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.goroutine_census_processes, c.metrics_top_processes);
        assert_eq!(c.goroutine_leak_threshold, Duration::from_secs(60));
    }

    #[test]
    fn the_goroutine_census_can_be_turned_off_but_not_made_too_frequent() {
        let c = parse("goroutine_census_interval = \"0s\"", None).expect("off");
        assert_eq!(c.goroutine_census_interval, None);
        let err = parse("goroutine_census_interval = \"10ms\"", None).expect_err("too often");
        assert!(
            err.to_string().contains("goroutine_census_interval"),
            "{err}"
        );
        let c = parse("metrics_top_processes = 7", None).expect("top");
        assert_eq!(c.goroutine_census_processes, 7);
    }

    #[test]
    fn other_addresses_need_a_token() {
        let err = parse("", Some("0.0.0.0:7470")).expect_err("no token");
        assert!(err.to_string().contains("token_file"), "{err}");
        std::env::set_var("LOUPE_TEST_TOKEN_X", "s3cret\n");
        let c = parse("token_env = \"LOUPE_TEST_TOKEN_X\"", Some("0.0.0.0:7470")).expect("token");
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        let err = parse("token_env = \"LOUPE_TEST_NOT_SET_Y\"", None).expect_err("unset");
        assert!(err.to_string().contains("LOUPE_TEST_NOT_SET_Y"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("window = \"soon\"", None).expect_err("bad window");
        assert!(err.to_string().contains("window"), "{err}");
        let err = parse("", Some("localhost")).expect_err("bad listen");
        assert!(err.to_string().contains("localhost"), "{err}");
        assert!(toml::from_str::<File>("colour = 1").is_err());
        let err = parse("cpu_frequency_hz = 0", None).expect_err("zero hz");
        assert!(err.to_string().contains("cpu_frequency_hz"), "{err}");
    }
}
