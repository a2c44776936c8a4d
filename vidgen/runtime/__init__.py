"""The composition layer: load a model (a vidgen package or a diffusers pipeline folder) by reference and run it;
evaluation runs; run artifacts.

It joins the model core (`vidgen.model`, `vidgen.diffusion`, ...) and `storage` (packages, registry, video), and
knows no Ray: `jobs/` and `cluster/` build on it. Modules:

    references.py      a model reference (folder, shipped name, NAME@vN) -> a verified local package folder
    packages.py        a VideoDiT to and from a package folder (safetensors + config.json + card + SHA256SUMS)
    pipeline.py        VideoPipeline: a loaded model with its capabilities, generating ResolvedClips; the vidgen
                       backend, and `describe_model` for drivers that plan without loading weights
    diffusers_pipeline.py  the diffusers backend: pipeline folders (Wan, LTX-Video, CogVideoX, ...), offline
    model_import.py    a diffusers folder -> a package with its model card and SHA256SUMS
    options.py         PipelineOptions: dtype and memory switches (render and serving configs)
    manifest.py        render manifests (JSONL/CSV) validated row by row into clip requests
    eval_runs.py       prompt accuracy of a model by reference
    promotion.py       eval-gated promotion and rollback of registry aliases
    local_training.py  `vidgen train` in one process, into a package folder with its artifacts
    artifacts.py       what runs leave: the model card, metrics.csv
    plots.py           loss curve and contact sheet PNGs
"""
