//! Where the model runs: the CPU (always) or an NVIDIA GPU (builds with `--features
//! cuda`), chosen at run time with `--device cpu|cuda[:N]`.
//!
//! The choice is made once, when a model is loaded: the weights, the KV cache and every
//! intermediate tensor then live on that device, and only the logits of the last
//! position come back to the CPU for sampling. A binary built without the `cuda`
//! feature still understands `--device cuda` and refuses it with a message that says
//! how to get a CUDA build, rather than falling back silently to the CPU.

use super::error::{LlmError, Result};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// A device named on the command line or in a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU, with candle's quantized kernels (the default).
    #[default]
    Cpu,
    /// The NVIDIA GPU with this ordinal (`cuda` = `cuda:0`).
    Cuda(usize),
}

impl DeviceChoice {
    /// The device named by `KURA_DEVICE` (`cpu`, `cuda`, `cuda:N`), else the CPU.
    pub fn from_env() -> Self {
        std::env::var("KURA_DEVICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// Whether this build of Kura was compiled with CUDA support (`--features cuda`).
    pub fn cuda_compiled() -> bool {
        candle_core::utils::cuda_is_available()
    }

    /// Opens the device. `cuda` fails with [`LlmError::Device`] when the binary was
    /// built without the `cuda` feature or no usable GPU is present.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(ordinal) => {
                if !Self::cuda_compiled() {
                    return Err(LlmError::Device(
                        "this build of Kura has no CUDA support: rebuild it with \
                         `cargo build --release --features cuda` on a machine with the CUDA \
                         toolkit, or use `--device cpu` / このビルドは CUDA に対応していません"
                            .to_string(),
                    ));
                }
                Device::new_cuda(ordinal).map_err(|e| {
                    LlmError::Device(format!(
                        "cannot open CUDA GPU {ordinal} (is an NVIDIA GPU with its driver \
                         present?): {e} / GPU {ordinal} を使用できません"
                    ))
                })
            }
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceChoice::Cuda(n)),
                _ => Err(LlmError::InvalidArgument(format!(
                    "unknown device `{s}` (expected cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(0) => f.write_str("cuda"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_device_names() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "CUDA".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(DeviceChoice::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cpu_always_opens_and_cuda_is_refused_clearly_without_the_feature() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !DeviceChoice::cuda_compiled() {
            let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
