"""`vidgen`: the command line front door. Heavy libraries are imported inside commands so --help is instant.

Each command is a thin wrapper over a plain function (`vidgen.pipelines.*`, `vidgen.runs.*`, `jobs.*`, `cluster.*`,
`storage.*`);
`vidgen data …` and `vidgen models …` live in `vidgen/cli/data.py` and `vidgen/cli/models.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import (
    CACHE_HELP,
    CONFIG_PRECEDENCE,
    VERBOSE_HELP,
    SetOption,
    fail,
    name_the_log_file,
    one_line_errors,
    progress,
    setup_logging,
    start_console_logging,
)
from vidgen.config import preset_names

app = typer.Typer(
    help="vidgen: train (in one process, or on Ray Train + DeepSpeed), evaluate, generate and bulk-render short "
         "text-to-video clips with a small diffusion transformer, and serve them over HTTP with Ray Serve; prepare "
         "data sets in object storage and keep versioned models in a registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("vidgen")
_ENTRY_POINT = {"routes_chatter": False}  # set by main(): only the real `vidgen` process routes library chatter


@app.callback()
def _options(verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False) -> None:
    """Options for every command: vidgen --verbose COMMAND ..."""
    if _ENTRY_POINT["routes_chatter"]:
        start_console_logging(verbose)


def _add_subcommands() -> None:
    from vidgen.cli import cluster_commands, data, distill, finetune, job_commands, models, render, serve

    app.add_typer(cluster_commands.app, name="cluster")
    app.add_typer(data.app, name="data")
    app.add_typer(models.app, name="models")
    app.add_typer(serve.app, name="serve")
    app.add_typer(job_commands.app, name="jobs")
    app.command("submit")(job_commands.submit)
    app.command("render")(render.render)
    app.command("distill")(distill.distill)
    app.command("finetune")(finetune.finetune)


@app.command()
@one_line_errors(ValueError)
def train(
    preset: Annotated[str, typer.Option(help=f"training preset from vidgen/configs/: {', '.join(preset_names())}")] =
        "tiny",
    config: Annotated[Path | None, typer.Option(help=f"a YAML TrainConfig file, used instead of --preset; "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    minutes: Annotated[float | None, typer.Option(help="training time budget in minutes")] = None,
    steps: Annotated[int | None, typer.Option(help="stop after this many optimizer steps")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for data, noise and initial weights")] = None,
    out: Annotated[str | None, typer.Option(help="where the trained model goes (a folder; with --workers also "
                                                 "s3://…); default runs/tiny, or RUNS/NAME/model with --workers")] =
        None,
    eval_clips: Annotated[int | None, typer.Option(help="clips per split in the final evaluation")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate the config, print it and exit")] = False,
    workers: Annotated[int | None, typer.Option(help="train on Ray Train with this many DeepSpeed workers (a "
                                                     "local Ray is started unless --address is given)")] = None,
    zero: Annotated[int, typer.Option(help="with --workers: ZeRO stage 0-3")] = 2,
    offload: Annotated[bool, typer.Option(help="with --workers: optimizer states in CPU memory")] = False,
    gpu: Annotated[bool, typer.Option(help="with --workers: one GPU per worker (NCCL, bf16)")] = False,
    data: Annotated[str, typer.Option(help="'synth' (the built-in world, made on the fly), or a data set URI from "
                                           "vidgen data prepare or vidgen data ingest (its train split)")] = "synth",
    autoencoder: Annotated[str | None, typer.Option(help="single process: reuse the frame autoencoder of this "
                                                         "model (e.g. shapes-tiny) instead of training one")] = None,
    start_from: Annotated[str | None, typer.Option(help="single process: fine-tune this model (e.g. shapes-tiny) "
                                                        "instead of starting from random weights; its autoencoder "
                                                        "stays frozen and --preset must be the one it was made "
                                                        "with")] = None,
    runs: Annotated[str, typer.Option(help="with --workers: where runs keep checkpoints (folder or s3://)")] =
        "runs",
    push: Annotated[str | None, typer.Option(help="with --workers: also push the model to this registry model "
                                                  "URI, e.g. s3://bucket/models/shapes")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="with --workers: steps between checkpoints")] = 50,
    resume: Annotated[str | None, typer.Option(help="continue the run of this name under --runs, from its last "
                                                    "checkpoint (its saved config; --steps/--minutes may extend it)")]
        = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto)")] = None,
) -> None:
    """Train a model on the built-in world (made on the fly) or, with --data, on a data set of your own videos
    (vidgen data ingest): in this process, or with --workers on Ray Train + DeepSpeed ZeRO.

    Single process writes OUT/{config.json, model.safetensors, card.md, SHA256SUMS, metrics.csv, evals.json,
    loss_curve.png, samples.png}. Example: vidgen train --preset tiny --minutes 10 --out runs/try1
    Fine-tune the shipped model on your videos instead of starting from random weights:
    vidgen train --start-from shapes-tiny --data data/mine --steps 300 --out runs/mine

    Distributed: vidgen train --preset tiny --workers 2 --zero 3 --data s3://bucket/shapes --steps 500
    checkpoints into RUNS/NAME and writes the consolidated model package to RUNS/NAME/model (or --out).

    The TrainConfig is the preset (or --config), then each --set, then --minutes, --steps and --seed.
    """
    setup_logging()
    from vidgen.config import load_config
    from vidgen.training import TrainConfig

    source = config or preset
    flags = {"max_minutes": minutes, "max_steps": steps, "seed": seed}
    if workers is not None or resume is not None:
        from vidgen.cli.train_workers import train_distributed

        if start_from:
            raise typer.BadParameter("is single-process only; leave out --workers/--resume", param_hint="--start-from")

        train_distributed(source, set_ or [], flags, dry_run=dry_run, workers=workers or 2, zero_stage=zero,
                          offload_optimizer=offload, use_gpu=gpu, data=data, runs=runs, out=out, push=push,
                          checkpoint_every=checkpoint_every, resume=resume, address=address)
        return
    cfg = load_config(TrainConfig, source, set_ or [], flags)
    if dry_run:
        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
        return
    out = Path(out or "runs/tiny")

    from vidgen.runs.local_training import train_to_folder

    bar = progress()
    by_time = cfg.max_minutes is not None
    total = int(cfg.max_minutes * 60) if by_time else cfg.max_steps
    with bar:
        task = bar.add_task("training", total=total, status="")

        def on_step(stats: dict) -> None:
            done = int(stats["minutes"] * 60) if by_time else stats["step"]
            bar.update(task, completed=min(done, total),
                       status=f"step {stats['step']} loss {stats['loss']:.4f} {stats['samples_per_s']:.0f} clips/s")

        summary = train_to_folder(cfg, out, final_eval_clips=eval_clips, on_step=on_step,
                                  data=None if data == "synth" else data, autoencoder=autoencoder,
                                  start_from=start_from)
    final = summary["final"]
    if not final:
        typer.echo(f"trained {summary['steps']} steps in {summary['minutes']:.1f} min on {data}; {_losses(summary)}, "
                   f"autoencoder reconstruction MSE "
                   f"{summary['autoencoder_mse']:.4f}\nmodel, card, loss_curve.png and samples.png are in {out}/")
        if summary["memorization"]:
            m = summary["memorization"]
            typer.echo(f"memorization check (in the card): {m['training_captions']['extracted_share']:.2f} of "
                       f"generations on training captions extracted; "
                       f"{'it MEMORIZES its training clips' if m['memorizes'] else 'no sign of memorization'}")
        return
    typer.echo(
        f"trained {summary['steps']} steps in {summary['minutes']:.1f} min; {_losses(summary)}\n"
        f"prompt accuracy (all three): seen {final['seen']['all_three']:.2f}, "
        f"held-out {final['heldout']['all_three']:.2f}, paraphrased {final['paraphrase']['all_three']:.2f}\n"
        f"model, card, loss_curve.png and samples.png are in {out}/"
    )


def _losses(summary: dict) -> str:
    """The run's first and last loss in the words of its card (the progress bar shows single steps' losses)."""
    from vidgen.runs.cards import loss_span_text

    return loss_span_text(summary["first_loss"], summary["last_loss"], summary["loss_window"])


@app.command()
@one_line_errors(ValueError)
def generate(
    prompt: Annotated[str, typer.Argument(help="what to show, e.g. 'a blue square moving up'")],
    out: Annotated[Path, typer.Option(help="output video file: .mp4 or .gif")] = Path("clip.mp4"),
    model: Annotated[str | None, typer.Option(help="model folder (vidgen package or diffusers pipeline folder), "
                                                   "shipped model name or registry reference (default: the demo)")] =
        None,
    seed: Annotated[int, typer.Option(help="noise seed; the same seed gives the same clip")] = 0,
    negative_prompt: Annotated[str | None, typer.Option(help="what not to show (models that take one)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps (default: the model's)")] = None,
    guidance: Annotated[float | None, typer.Option(help="classifier-free guidance scale (default: the model's)")]
        = None,
    frames: Annotated[int | None, typer.Option(help="frames (one the model makes; default: the model's)")] = None,
    height: Annotated[int | None, typer.Option(help="height in pixels (one the model makes)")] = None,
    width: Annotated[int | None, typer.Option(help="width in pixels (one the model makes)")] = None,
    lora: Annotated[str | None, typer.Option(help="a LoRA adapter from `vidgen finetune` (folder or registry "
                                                  "reference), refused unless trained on --model")] = None,
    lora_scale: Annotated[float, typer.Option(help="adapter strength: 1 as trained, 0 the base model's output")] =
        1.0,
    cache: Annotated[str | None, typer.Option(help=CACHE_HELP)] = None,
) -> None:
    """Generate one clip from a text prompt and write it as MP4 or GIF."""
    setup_logging()
    if out.suffix.lower() not in (".mp4", ".gif"):
        fail(f"--out {out} must end in .mp4 or .gif")
    from storage.video import write
    from vidgen.pipelines.options import PipelineOptions, StepCacheOptions
    from vidgen.runs.generate import generate as generate_clips

    bar = progress()
    with bar:
        task = bar.add_task("sampling", total=steps, status="")
        result = generate_clips(model, [prompt], [seed], steps, guidance, frames, height, width,
                                progress=lambda i: bar.update(task, completed=i), negative_prompt=negative_prompt,
                                options=PipelineOptions(lora=lora, lora_scale=lora_scale,
                                                        cache=cache and StepCacheOptions.from_flag(cache)),
                                on_steps=lambda n: bar.update(task, total=n))
    write(result.frames[0], out)
    reads = ""
    if result.detections:
        d = result.detections[0]
        reads = f"; detector reads: {d.colour} {d.shape} moving {d.direction}"
    cached = ""
    if result.cached_steps:
        cached = f", {result.cached_steps[0]['full']:g} steps in full, {result.cached_steps[0]['skipped']:g} from cache"
    typer.echo(f"wrote {out} with {result.label} ({result.timings['sample_s']:.1f} s{cached}){reads}")


@app.command("eval")
@one_line_errors(ValueError)
def eval_(
    model: Annotated[str | None, typer.Option(help="model folder, shipped model or registry reference (default: "
                                                   "the demo)")] = None,
    clips: Annotated[int, typer.Option(help="clips per split (with --data: held-out clips, at most)")] = 96,
    seed: Annotated[int, typer.Option(help="evaluation seed")] = 0,
    steps: Annotated[int | None, typer.Option(help="sampler steps (default: the model's)")] = None,
    guidance: Annotated[float | None, typer.Option(help="guidance scale (default: the model's)")] = None,
    frames: Annotated[int | None, typer.Option(help="frames of the clips to time (diffusers models; with --data, "
                                                    "at most this many)")] = None,
    height: Annotated[int | None, typer.Option(help="height of the clips to time (diffusers models; with --data, "
                                                    "at most)")] = None,
    width: Annotated[int | None, typer.Option(help="width of the clips to time (diffusers models; with --data, "
                                                   "at most)")] = None,
    perceptual: Annotated[int, typer.Option(help="clips of seen prompts for the perceptual metrics (FD and KID "
                                                 "of frame features, FVD-vidgen, consistency); 0 skips them")] = 48,
    lora: Annotated[str | None, typer.Option(help="a LoRA adapter from `vidgen finetune` (folder or registry "
                                                  "reference) fused into --model once, refused unless trained on "
                                                  "it")] = None,
    lora_scale: Annotated[float, typer.Option(help="adapter strength: 1 as trained, 0 the base model's output")] =
        1.0,
    data: Annotated[str | None, typer.Option(help="a data set from `vidgen data ingest` (folder or s3://…): judge a "
                                                  "diffusers model on its eval split's clips (validation loss, FD of "
                                                  "frames, temporal consistency), as `vidgen models promote "
                                                  "--data` does")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the result as JSON to this file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    memorization: Annotated[str | None, typer.Option(help="also run the memorization check against this training "
                                                          "data set (URI): how many generations on its captions are "
                                                          "near-duplicates of its clips")] = None,
) -> None:
    """Prompt accuracy (colour, shape, direction, all three) on seen, held-out and paraphrased prompts, and
    perceptual metrics against the world's own clips of the same prompts (lower FD/KID/FVD is closer).

    Prompt accuracy scores the built-in world; a diffusers model was not trained on it, so for one this reports
    what applies: seconds per clip, and with --data its quality on held-out footage of your own (lower validation
    loss and FD are better; consistency and flicker scores near the footage's own).
    """
    setup_logging()
    from vidgen.pipelines.options import PipelineOptions
    from vidgen.runs.eval_runs import evaluate_held_out, evaluate_model

    if memorization and (lora or data):
        fail("--memorization checks a model alone: run it without --lora and --data")
    options = PipelineOptions(lora=lora, lora_scale=lora_scale)
    bar = progress()
    task = bar.add_task("evaluating", total=None, status="")

    def evaluated(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with contextlib.nullcontext() if as_json else bar:  # --json prints JSON alone
        if data:
            result = evaluate_held_out(model, data, clips, seed, steps, frames, height, width, options,
                                       progress=evaluated)
        else:
            result = evaluate_model(model, clips, seed, steps, guidance, frames, height, width,
                                    perceptual_clips=perceptual, progress=evaluated, options=options)
    if memorization:
        from vidgen.runs.memorization import memorization_report

        result["memorization"] = memorization_report(model, memorization, min(clips, 32), seed)
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    if data:
        typer.echo(f"{result['model']} ({result['pipeline_class']}) on {result['clips']} held-out clips of {data} "
                   f"({'x'.join(map(str, result['clip_shape']))}, {result['steps']} steps): validation loss "
                   f"{result['val_loss']:.4f}, FD of frames {result['fd_frames']:.2f}, subject consistency "
                   f"{result['subject_consistency']:.3f} (footage {result['subject_consistency_reference']:.3f}), "
                   f"flicker {result['flicker']:.3f} (footage {result['flicker_reference']:.3f}), "
                   f"{result['seconds_per_clip']:.2f} s a clip" + (f"; written to {out}" if out else ""))
        return
    if "seen" not in result:  # a model the built-in world's prompt accuracy does not measure
        typer.echo(f"{result['model']} ({result['pipeline_class']}): {result['seconds_per_clip']:.2f} s a "
                   f"{'x'.join(map(str, result['clip_shape']))} clip at {result['sampler']['steps']} steps, over "
                   f"{clips} clips; {result['applies']}")
        return
    typer.echo(f"{result['model']}: {clips} clips per split")
    for split in ("seen", "heldout", "paraphrase"):
        m = result[split]
        typer.echo(f"  {split:<10} colour {m['colour']:.2f}  shape {m['shape']:.2f}  "
                   f"direction {m['direction']:.2f}  all three {m['all_three']:.2f}")
    if "perceptual" in result:
        p = result["perceptual"]
        typer.echo(f"  perceptual ({p['clips']} clips of seen prompts vs the world's own): FD-frames "
                   f"{p['fd_frames']:.1f}  KID-frames {p['kid_frames']:.4f}  FVD-vidgen {p['fvd_vidgen']:.2f}  "
                   f"KVD-vidgen {p['kvd_vidgen']:.4f}  subject consistency {p['subject_consistency']:.3f} "
                   f"(world {p['subject_consistency_reference']:.3f})  flicker {p['flicker']:.3f} "
                   f"(world {p['flicker_reference']:.3f}); PSNR {p['psnr']:.1f} dB, SSIM {p['ssim']:.3f}")
    if memorization:
        m = result["memorization"]
        typer.echo(f"  memorization against {memorization} ({m['training_clips']} training clips): extracted "
                   f"(perceptual hash within {m['extraction_bits']} of {m['bits']} bits) on training captions "
                   f"{m['training_captions']['extracted_share']:.2f}, on held-out prompts "
                   f"{m['heldout_prompts']['extracted_share']:.2f}; "
                   f"{'MEMORIZES its training clips' if m['memorizes'] else 'no sign of memorization'}")


@app.command()
@one_line_errors(ValueError)
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo clips")] = Path("out"),
    model: Annotated[str | None, typer.Option(help="model folder or shipped model name")] = None,
) -> None:
    """Generate a handful of clips with the shipped demo model into OUT and report their prompt accuracy."""
    setup_logging()
    from storage.video import write
    from vidgen.runs.eval_runs import SAMPLE_PROMPTS, accuracy_of
    from vidgen.runs.generate import generate as generate_clips
    from vidgen.runs.plots import contact_sheet_png

    prompts = list(SAMPLE_PROMPTS)
    bar = progress()
    with bar:
        task = bar.add_task("sampling", total=None, status=f"{len(prompts)} clips")
        result = generate_clips(model, prompts, list(range(len(prompts))),
                                progress=lambda i: bar.update(task, completed=i))
    out.mkdir(parents=True, exist_ok=True)
    for i, (prompt, clip, d) in enumerate(zip(prompts, result.frames, result.detections, strict=True)):
        name = f"{i:02d}-" + prompt.replace(" ", "-")
        write(clip, out / f"{name}.mp4")
        write(clip, out / f"{name}.gif")
        typer.echo(f"  {prompt:<32} -> detector reads {d.colour} {d.shape} moving {d.direction}")
    sheet = contact_sheet_png(result.frames, prompts, out / "contact_sheet.png")
    acc = accuracy_of(result, prompts)
    typer.echo(f"prompt accuracy on these {len(prompts)} clips: all three {acc.all_three:.2f} "
               f"(colour {acc.colour:.2f}, shape {acc.shape:.2f}, direction {acc.direction:.2f})")
    typer.echo(f"clips (.mp4 and .gif) and {sheet.name} are in {out.resolve()}/")


_add_subcommands()


def main() -> None:
    _ENTRY_POINT["routes_chatter"] = True
    try:
        app(prog_name="vidgen")
    finally:
        name_the_log_file()
