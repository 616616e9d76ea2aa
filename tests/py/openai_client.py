"""Drives a running `kura serve` with the official `openai` Python client.

Usage: python openai_client.py BASE_URL CHAT_MODEL EMBEDDING_MODEL

Prints one JSON object with what the client saw; tests/server_openai.rs asserts on it.
Run by that test with the venv that installer/setup creates (target/pyenv).
"""

import json
import math
import sys

import openai
from openai import OpenAI

base_url, chat_model, embedding_model = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=600)
out = {"openai_version": openai.__version__}


def error_info(call):
    try:
        call()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "message": str(e),
            "code": body.get("code"),
            "param": body.get("param"),
        }
    return None


# --- models -----------------------------------------------------------------------
out["models"] = [m.id for m in client.models.list().data]

# --- chat, not streamed -----------------------------------------------------------
question = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
r = client.chat.completions.create(
    model=chat_model, messages=question, max_tokens=24, temperature=0
)
out["chat"] = {
    "object": r.object,
    "id": r.id,
    "model": r.model,
    "role": r.choices[0].message.role,
    "content": r.choices[0].message.content,
    "finish_reason": r.choices[0].finish_reason,
    "usage": r.usage.model_dump(),
}

# A reply cut by max_tokens says so.
r = client.chat.completions.create(
    model=chat_model,
    messages=[{"role": "user", "content": "Write a long story about a dragon."}],
    max_completion_tokens=5,
    temperature=0.7,
    seed=42,
)
out["length"] = {
    "finish_reason": r.choices[0].finish_reason,
    "completion_tokens": r.usage.completion_tokens,
    "content": r.choices[0].message.content,
}

# --- chat, streamed ---------------------------------------------------------------
stream = client.chat.completions.create(
    model=chat_model,
    messages=question,
    max_tokens=24,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage, objects, ids, roles = [], None, None, set(), set(), []
for chunk in stream:
    objects.add(chunk.object)
    ids.add(chunk.id)
    if chunk.choices:
        c = chunk.choices[0]
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
    if chunk.usage:
        usage = chunk.usage.model_dump()
out["stream"] = {
    "pieces": pieces,
    "text": "".join(pieces),
    "finish_reason": finish,
    "usage": usage,
    "objects": sorted(objects),
    "ids": len(ids),
    "roles": roles,
}

# --- stop strings -----------------------------------------------------------------
count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
full = client.chat.completions.create(
    model=chat_model, messages=count, max_tokens=40, temperature=0
)
stopped = client.chat.completions.create(
    model=chat_model, messages=count, max_tokens=40, temperature=0, stop=["5"]
)
out["stop"] = {
    "full": full.choices[0].message.content,
    "stopped": stopped.choices[0].message.content,
    "finish_reason": stopped.choices[0].finish_reason,
}

# --- embeddings -------------------------------------------------------------------
texts = [
    "東京は日本の首都です。",
    "日本の首都は東京である。",
    "この機械は毎朝、始業前に点検してください。",
]
# The SDK asks for base64 by default and decodes it; also ask for floats explicitly.
e = client.embeddings.create(model=embedding_model, input=texts)
vectors = [d.embedding for d in sorted(e.data, key=lambda d: d.index)]
e_float = client.embeddings.create(
    model=embedding_model, input=texts[0], encoding_format="float"
)


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


q = client.embeddings.create(
    model=embedding_model, input=["query: 日本の首都はどこですか?"]
).data[0].embedding
out["embeddings"] = {
    "model": e.model,
    "count": len(vectors),
    "dims": [len(v) for v in vectors],
    "norms": [math.sqrt(dot(v, v)) for v in vectors],
    "sim_paraphrase": dot(vectors[0], vectors[1]),
    "sim_unrelated": dot(vectors[0], vectors[2]),
    "query_to_answer": dot(q, vectors[0]),
    "query_to_unrelated": dot(q, vectors[2]),
    "float_vs_base64_max_diff": max(
        abs(a - b) for a, b in zip(e_float.data[0].embedding, vectors[0])
    ),
    "usage": e.usage.model_dump(),
}

# --- errors -----------------------------------------------------------------------
out["errors"] = {
    "unknown_model": error_info(
        lambda: client.chat.completions.create(
            model="gpt-4o", messages=question, max_tokens=4
        )
    ),
    "context_overflow": error_info(
        lambda: client.chat.completions.create(
            model=chat_model, messages=question, max_tokens=10_000_000
        )
    ),
    "context_overflow_streamed": error_info(
        lambda: list(
            client.chat.completions.create(
                model=chat_model, messages=question, max_tokens=10_000_000, stream=True
            )
        )
    ),
    "chat_model_for_embeddings": error_info(
        lambda: client.embeddings.create(model=chat_model, input="x")
    ),
    "n_2": error_info(
        lambda: client.chat.completions.create(
            model=chat_model, messages=question, max_tokens=4, n=2
        )
    ),
}

print(json.dumps(out, ensure_ascii=False))
