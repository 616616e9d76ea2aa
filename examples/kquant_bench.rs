//! Micro-benchmark of `kura::llm::kquant` against candle's `QMatMul` on random
//! Q4_K/Q6_K weights of the default model's shapes: `cargo run --release --example
//! kquant_bench -- ROWS [SHAPE]` (ROWS = activation rows: 1 for decode, 31+ for prefill).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

fn main() {
    let dev = Device::Cpu;
    let m: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let only: Option<usize> = std::env::args().nth(2).map(|s| s.parse().unwrap());
    for (dt, n, k) in [
        (GgmlDType::Q4K, 8960, 1536),
        (GgmlDType::Q6K, 1536, 8960),
        (GgmlDType::Q4K, 1536, 8960),
        (GgmlDType::Q6K, 32768, 1536),
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| only.is_none_or(|o| o == *i))
    .map(|(_, v)| v)
    {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let q = QTensor::quantize(&w, dt).unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let data = q.data().unwrap().to_vec();
        let kind = kura::llm::kquant::kernel_for(dt, k).unwrap();
        let mut y = vec![0f32; m * n];
        let reps = (2_000_000_000 / (n * k * m.max(4))).max(3);
        for _ in 0..2 {
            kura::llm::kquant::matmul(kind, &data, n, k, &xs, m, &mut y);
        }
        let t = Instant::now();
        for _ in 0..reps {
            kura::llm::kquant::matmul(kind, &data, n, k, &xs, m, &mut y);
        }
        let ours = t.elapsed().as_secs_f64() / reps as f64;
        let qm = QMatMul::from_qtensor(q).unwrap();
        for _ in 0..2 {
            qm.forward(&x).unwrap();
        }
        let t = Instant::now();
        for _ in 0..reps {
            qm.forward(&x).unwrap();
        }
        let theirs = t.elapsed().as_secs_f64() / reps as f64;
        let bytes = data.len() as f64;
        println!("{dt:?} {n}x{k} m={m}: kura {:.3} ms ({:.1} GB/s, {:.1} GMAC/s)  candle {:.3} ms ({:.1} GB/s)  ratio {:.2}",
            ours * 1e3, bytes / ours / 1e9, (n * k * m) as f64 / ours / 1e9, theirs * 1e3, bytes / theirs / 1e9, theirs / ours);
    }
}
