"""PyTorch + PEFT's side of `kura bench train` (written out and run by the kura binary).

  python peft_train_driver.py JOB.json

Loads the Hugging Face export of the GGUF's dequantized base (f32), wraps it with a
PEFT LoRA adapter (same rank, alpha and target modules as Kura; dropout 0), and runs
`warmup_steps` untimed then `steps` timed optimizer steps on `batch` copies of the
job's token ids: forward with labels = ids (loss on every token), backward,
`clip_grad_norm_(1.0)`, `torch.optim.AdamW`. Prints one JSON line with the figures.
"""

import json
import resource
import sys
import time

import torch


def main():
    job = json.load(open(sys.argv[1]))
    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    t = time.perf_counter()
    import peft
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        job["hf_dir"], dtype=torch.float32
    )
    config = peft.LoraConfig(
        r=job["rank"],
        lora_alpha=job["alpha"],
        lora_dropout=0.0,
        target_modules=job["targets"],
        task_type="CAUSAL_LM",
    )
    model = peft.get_peft_model(model, config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=job["learning_rate"], weight_decay=0.0)
    load_s = time.perf_counter() - t

    ids = torch.tensor([job["tokens"]] * max(1, job["batch"]), dtype=torch.long)
    warmup_s, step_s, losses = [], [], []
    cpu_start = 0.0
    for step in range(job["warmup_steps"] + job["steps"]):
        if step == job["warmup_steps"]:
            cpu_start = time.process_time()
        t = time.perf_counter()
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        del out
        dt = time.perf_counter() - t
        (warmup_s if step < job["warmup_steps"] else step_s).append(dt)

    cpu_s = time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "engine": "peft",
                "load_s": load_s,
                "tokens_per_step": ids.numel(),
                "step_s": step_s,
                "warmup_s": warmup_s,
                "losses": losses,
                "cpu_s": cpu_s,
                "peak_rss_mb": peak_kb / 1024.0,
                "versions": "torch %s, transformers %s, peft %s"
                % (torch.__version__, transformers.__version__, peft.__version__),
            }
        )
    )


if __name__ == "__main__":
    main()
