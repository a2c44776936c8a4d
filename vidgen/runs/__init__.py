"""What a run makes and keeps, without Ray: local training, distillation, evaluation runs (through a
`VideoPipeline`), feature nets, promotion gates, cards and plots. `jobs/` wraps the long ones as Ray jobs.

    local_training.py  `vidgen train` in one process, into a package folder with its artifacts
    distillation.py    the teacher's trajectories -> a K-step student package and its card
    eval_runs.py       evaluation of a model by reference (`vidgen eval`), perceptual metrics
    generate.py        one clip per prompt from a model reference (`vidgen generate`, `vidgen demo`)
    feature_nets.py    the frame and clip feature networks the perceptual metrics use
    promotion.py       eval-gated promotion and rollback of registry aliases
    cards.py           the model card and metrics.csv a run leaves
    plots.py           loss curve and contact sheet PNGs
"""
