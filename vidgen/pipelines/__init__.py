"""Load any model by reference and run it, without Ray: bulk render, serving, evaluation and `vidgen generate` all
come through here.

    load.py              `load_pipeline` / `describe_model`: one lazy table of backends, keyed by the folder's kind
    base.py              VideoPipeline (what every backend offers) and ModelInfo (what a planner reads)
    vidgen_package.py    the vidgen backend: a VideoDiT package
    diffusers_folder.py  the diffusers backend: pipeline folders (Wan, LTX-Video, CogVideoX, ...), offline
    references.py        a model reference (folder, shipped name, NAME@vN, NAME@ALIAS) -> a folder verified once
    packages.py          a VideoDiT to and from a package folder (safetensors + config.json + card + SHA256SUMS)
    options.py           PipelineOptions: precision and memory switches (render and serving configs)
    model_import.py      a diffusers folder -> a package with its model card and SHA256SUMS
"""
