"""A serving replica of a vidgen model imports no diffusers, transformers or their dependencies: on its start path
they cost ~6 s of a ~5 s goal (benchmarks/replica_start.py). Checked in a fresh interpreter, through sys.modules."""

import json
import subprocess
import sys

HEAVY = ("diffusers", "transformers", "sentence_transformers", "torchao", "peft", "accelerate", "sklearn", "scipy")


def _imported_after(code: str) -> list[str]:
    script = (f"import sys, json\n{code}\n"
              f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_vidgen_replica_loads_its_model_drift_and_warm_up_without_heavy_imports(tmp_path):
    code = f"""
import os
os.environ.update(VIDGEN_CACHE={str(tmp_path / 'cache')!r}, VIDGEN_RUNS_SECRET="test")
import cluster.tier_replica
from vidgen.pipelines.drift_reference import cached_world_drift
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.references import model_digest, verify_model
from vidgen.text import TextEncoder
model = verify_model("shapes-tiny-k1")
pipeline = load_pipeline(model, TextEncoder())
cached_world_drift(model_digest(model.sums), pipeline.encoder, *pipeline.capabilities.shape)
"""
    assert _imported_after(code) == []
