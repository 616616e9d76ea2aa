#!/usr/bin/env python3
"""multilingual-e5-small under PyTorch, on the very weights Kura serves.

The reference side of `kura bench embed`: reads the same E5S1 container
(`multilingual-e5-small-q4.e5s1`), dequantizes its Q4_0 matrices to f32 (exactly
what they hold), builds the standard BERT/XLM-R encoder with torch.nn.functional,
and embeds the token ids Kura hands it on stdin (JSON: {"batches": [[[ids...], ...]],
"threads": N, "repeats": R}), so both engines do the same work. Prints JSON: seconds
per repeat and the first embedding (for a sanity check of agreement).

Needs torch and numpy (installer/bench-tools). Not part of the test suite.
"""
import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_e5s1(path):
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:4] == b"E5S1", "not an E5S1 file"
    off = 8
    hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", buf, off)
    off += 28
    (eps,) = struct.unpack_from("<f", buf, off)
    off += 4
    off += 4  # quant block
    n_pieces, _bos, _eos, _pad, _unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (blob_len,) = struct.unpack_from("<Q", buf, off)
    off += 8
    off += 4 * (n_pieces + 1) + 4 * n_pieces + blob_len
    (n_norm,) = struct.unpack_from("<i", buf, off)
    off += 4
    (norm_bytes,) = struct.unpack_from("<I", buf, off)
    off += 4 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", buf, off)
    off += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = buf[off:off + name_len].decode()
        off += name_len
        kind = buf[off]
        off += 1
        elements, t_off, nbytes = struct.unpack_from("<IQQ", buf, off)
        off += 20
        data = buf[t_off:t_off + nbytes]
        if kind == 0:
            arr = np.frombuffer(data, dtype="<f4", count=elements).copy()
        else:
            blocks = np.frombuffer(data, dtype=np.uint8).reshape(-1, 18)
            d = blocks[:, :2].copy().view("<f2").astype(np.float32)
            q = blocks[:, 2:]
            lo = (q & 0x0F).astype(np.int8) - 8
            hi = (q >> 4).astype(np.int8) - 8
            arr = (np.concatenate([lo, hi], axis=1).astype(np.float32) * d).reshape(-1)[:elements]
        tensors[name] = torch.from_numpy(arr)
    cfg = dict(hidden=hidden, layers=layers, heads=heads, inter=inter, eps=eps)
    return cfg, tensors


class Encoder:
    def __init__(self, cfg, t):
        h = cfg["hidden"]
        self.cfg = cfg
        self.word = t["emb.word"].view(-1, h)
        self.pos = t["emb.pos"].view(-1, h)
        self.type = t["emb.type"].view(-1, h)[0]
        self.ln = (t["emb.ln.w"], t["emb.ln.b"])
        self.layers = []
        for l in range(cfg["layers"]):
            lin = lambda n, rows, cols: (t[f"l{l}.{n}.w"].view(rows, cols), t[f"l{l}.{n}.b"])
            self.layers.append(dict(
                q=lin("q", h, h), k=lin("k", h, h), v=lin("v", h, h), ao=lin("ao", h, h),
                aln=(t[f"l{l}.aln.w"], t[f"l{l}.aln.b"]),
                fi=lin("fi", cfg["inter"], h), fo=lin("fo", h, cfg["inter"]),
                oln=(t[f"l{l}.oln.w"], t[f"l{l}.oln.b"]),
            ))

    @torch.inference_mode()
    def embed(self, batch):
        h, nh, eps = self.cfg["hidden"], self.cfg["heads"], self.cfg["eps"]
        n = max(len(s) for s in batch)
        ids = torch.zeros((len(batch), n), dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.float32)
        for i, s in enumerate(batch):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        x = self.word[ids] + self.pos[:n] + self.type
        x = F.layer_norm(x, (h,), *self.ln, eps)
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        hd = h // nh
        for L in self.layers:
            def heads(p):
                return F.linear(x, *p).view(len(batch), n, nh, hd).transpose(1, 2)
            q, k, v = heads(L["q"]), heads(L["k"]), heads(L["v"])
            a = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5 + bias, dim=-1) @ v
            a = a.transpose(1, 2).reshape(len(batch), n, h)
            x = F.layer_norm(x + F.linear(a, *L["ao"]), (h,), *L["aln"], eps)
            m = F.gelu(F.linear(x, *L["fi"]))
            x = F.layer_norm(x + F.linear(m, *L["fo"]), (h,), *L["oln"], eps)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(pooled, dim=-1)


def main():
    model = sys.argv[1]
    req = json.load(sys.stdin)
    torch.set_num_threads(int(req["threads"]))
    cfg, tensors = read_e5s1(model)
    enc = Encoder(cfg, tensors)
    enc.embed(req["batches"][0][:4])  # warm-up
    times = []
    first = None
    for _ in range(int(req["repeats"])):
        t = time.perf_counter()
        for b in req["batches"]:
            out = enc.embed(b)
            if first is None:
                first = out[0].tolist()
        times.append(time.perf_counter() - t)
    json.dump({"seconds": times, "first_embedding": first, "torch": torch.__version__,
               "threads": torch.get_num_threads()}, sys.stdout)


if __name__ == "__main__":
    main()
