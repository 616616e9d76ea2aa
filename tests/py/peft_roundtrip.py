"""The Python half of tests/peft_roundtrip.rs: Hugging Face transformers + PEFT on
the base model Kura exported (kura::train::export::export_hf).

  peft_roundtrip.py --base HF_DIR --ids 1,2,3 --kura-adapter DIR \
                    --make-adapter OUT_DIR --rank R --alpha A --seed S --out LOGITS

1. loads the exported base (f32) and computes its logits for the token ids;
2. loads Kura's adapter (PEFT format) with `peft.PeftModel.from_pretrained` and
   computes the logits of base + adapter;
3. creates a fresh PEFT LoRA adapter on all seven projections (PEFT's own init for
   A, then B drawn at random so that the adapter changes the output), saves it with
   `save_pretrained` into OUT_DIR for Kura to import, and computes its logits.

Writes the three [seq, vocab] logit matrices to LOGITS (safetensors: `base`,
`kura_adapter`, `peft_adapter`) and prints one JSON line of versions.
"""

import argparse
import json

import peft
import safetensors.torch
import torch
import transformers

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_base(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval()


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids).logits[0].float().contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--kura-adapter", required=True)
    ap.add_argument("--make-adapter", required=True)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    ids = torch.tensor([[int(t) for t in args.ids.split(",")]], dtype=torch.long)

    base = load_base(args.base)
    base_logits = logits_of(base, ids)

    kura = peft.PeftModel.from_pretrained(base, args.kura_adapter).eval()
    kura_logits = logits_of(kura, ids)

    torch.manual_seed(args.seed)
    config = peft.LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    made = peft.get_peft_model(load_base(args.base), config)
    with torch.no_grad():
        for name, p in made.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    made.eval()
    made_logits = logits_of(made, ids)
    made.save_pretrained(args.make_adapter)

    safetensors.torch.save_file(
        {"base": base_logits, "kura_adapter": kura_logits, "peft_adapter": made_logits},
        args.out,
    )
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
