"""Scene-adaptive frame interpolation of a user's footage (the seed's "testing with custom data").

    python -m savfi_core.interpolate INPUT --model NAME --weights CKPT --out OUTPUT
        [--size tiny|paper] [--algorithm maml|maml++|metasgd|l2f] [--adapt-steps N]
        [--inner-lr LR] [--times 2|4|8] [--no-adapt] [--downscale K] [--max-frames N] [--fps F]
        [--overwrite] [--strict] [--seed S] [--debug]

INPUT is a folder of frames (natural order) or a video file. For every gap between consecutive
frames ``F[i], F[i+1]`` that has a 4-frame window ``F[i-1], F[i], F[i+1], F[i+2]``, the network is
adapted on the window's two support triplets ``(F[i-1], F[i+1] -> F[i])`` and
``(F[i], F[i+2] -> F[i+1])`` and then predicts the frame between ``F[i]`` and ``F[i+1]``. The
first and last gaps have no such window and are interpolated without adaptation (logged).
``--times 4`` (or 8): a network that takes the time (``rife_v4``) predicts t = 1/4, 2/4, 3/4 of
every gap directly, from one adaptation per window; the others repeat the doubling on the doubled
sequence. Either way n frames become ``times * (n - 1) + 1``.

CKPT is ``none`` (random weights), ``default`` (the weights shipped with savfi for that size), a
network checkpoint in any layout ``create_model`` reads, or a MetaLearner checkpoint
(``MetaLearner.state_dict()``, at the top level or under a ``'learner'`` key), whose algorithm,
learned rates, attenuator and per-step BatchNorm are then used.

OUTPUT is a folder (numbered PNGs ``frame_000000.png`` ...) or a video file (suffix .mp4, .mkv,
.mov, .avi or .webm) encoded with PyAV at the input frame rate times ``--times``. It is checked
before anything is decoded or computed; an existing video or non-empty folder is refused unless
``--overwrite``, and then replaced as a whole, atomically (``savfi_core/io_safety.py``). A video
that decodes to fewer frames than its container declares (a cut file) is reported, and refused
with ``--strict``. Errors are one line, ``savfi: error: <path>: <what>`` with exit code 2
(``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from savfi_core.checkpoint import CheckpointError, safe_load
from savfi_core.data import DatasetError, Sample, four_frame_layout, list_image_files, read_image
from savfi_core.data.core import stack_same_size
from savfi_core.io_safety import VIDEO_SUFFIXES, OutputError, OutputTarget, check_output, describe_os_error, replace_atomically
from savfi_core.meta.config import ALGORITHMS, MetaConfig
from savfi_core.meta.learner import CHECKPOINT_FORMAT, MetaLearner

log = logging.getLogger("savfi.interpolate")


def read_input(
    path: Path, downscale: int = 1, max_frames: int | None = None, strict: bool = False
) -> tuple[torch.Tensor, float | None]:
    """Frames float32 [T, 3, H, W] in [0, 1] and the frame rate (None for an image folder).

    strict: a video that decodes to fewer frames than its container declares raises
    :class:`DatasetError` instead of logging a warning.
    """
    if path.is_dir():
        files = list_image_files(path)
        if not files:
            raise DatasetError(f"{path}: no image files in the input folder")
        files = files[:max_frames] if max_frames else files
        try:
            frames = stack_same_size([read_image(file) for file in files], files)
        except DatasetError as error:  # "<folder>: frames ... differ in size: <file> is ..."
            raise DatasetError(f"{path}: {error}") from error
        if downscale > 1:
            frames = F.avg_pool2d(frames, downscale)
        return frames, None
    if not path.is_file():
        raise FileNotFoundError(f"input {path} is neither a folder of frames nor a video file")
    from savfi_core.data import decode_video

    video = decode_video(path, downscale=downscale)
    check_video_complete(path, video.frames.shape[0], strict)
    frames = video.frames[:max_frames] if max_frames else video.frames
    return frames.to(torch.float32) / 255.0, video.fps


def declared_frame_count(path: Path) -> int:
    """Frames the container says its first video stream holds (0 when it does not say)."""
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames or 0)


def check_video_complete(path: Path, decoded: int, strict: bool) -> None:
    """Compare the decoded frame count with the container's: a cut file decodes without error."""
    declared = declared_frame_count(path)
    if declared and decoded < declared:
        message = (f"{path}: video is truncated: decoded {decoded} of the {declared} frames its container declares"
                   + ("" if strict else " (using those; --strict refuses such input)"))
        if strict:
            raise DatasetError(message)
        log.warning("warning: %s", message)


def build_learner(args: argparse.Namespace) -> MetaLearner:
    """A MetaLearner from a MetaLearner checkpoint, or around a plain network."""
    from savfi_core.backbones import create_model

    state = None
    weights = args.weights
    if weights not in ("none", "default"):
        loaded = safe_load(weights)
        if isinstance(loaded, dict) and isinstance(loaded.get("learner"), dict):
            loaded = loaded["learner"]
        if isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT:
            state = loaded
    if state is not None:
        model = create_model(args.model, size=args.size)
        saved_name = state.get("model_name")
        if saved_name not in (None, args.model):
            raise CheckpointError(f"{weights} is a MetaLearner checkpoint of {saved_name!r}, not {args.model!r}")
        learner = MetaLearner.from_state_dict(model, state)
        if args.algorithm is not None and args.algorithm != learner.config.algorithm:
            raise CheckpointError(f"{weights} was meta-trained with {learner.config.algorithm!r}; drop --algorithm or pass that one")
        log.info("MetaLearner checkpoint %s: algorithm %s, %d inner step(s)", weights, learner.config.algorithm, learner.config.inner_steps)
        return learner
    model = create_model(args.model, size=args.size, weights=None if weights == "none" else weights)
    config = MetaConfig(
        algorithm=args.algorithm or "maml",
        inner_steps=args.adapt_steps if args.adapt_steps is not None else 1,
        inner_lr=args.inner_lr,
        inner_rule=args.inner_rule,
    )
    log.info("network weights %s: plain %s adaptation (no learned rates)", weights, config.algorithm)
    return MetaLearner(model, config)


def multiply_frame_rate(
    frames: torch.Tensor, learner: MetaLearner, steps: int, adapt: bool, factor: int = 2, progress: bool = True
) -> torch.Tensor:
    """[T, 3, H, W] -> [factor * (T - 1) + 1, 3, H, W]: every gap gets ``factor - 1`` new frames.

    The frames at t = k / factor (k = 1 .. factor-1) are predicted directly, each in one pass, so
    ``factor`` above 2 needs a network that takes the time (``model.supports_time``). Each gap is
    adapted once, on its 4-frame window, and all its frames use the adapted weights.
    """
    count = frames.shape[0]
    if count < 2:
        raise ValueError(f"need at least 2 frames to interpolate, got {count}")
    if factor > 2 and not learner.model.supports_time:
        raise ValueError(f"{type(learner.model).__name__} predicts only the middle frame; use factor 2 (repeated doubling)")
    times = [index / factor for index in range(1, factor)] if factor > 2 else [None]
    output = [frames[0]]
    unadapted = []
    for gap in tqdm(range(count - 1), desc="interpolating", unit="gap", disable=not progress):
        has_window = 1 <= gap and gap + 2 < count
        if adapt and has_window:
            window = frames[gap - 1 : gap + 3]
            sample = Sample(*four_frame_layout(window), name=f"gap{gap}")
            params = learner.adapt(sample, steps)
        else:
            pair = torch.full((7, *frames.shape[1:]), float("nan"))
            pair[2], pair[4] = frames[gap], frames[gap + 1]
            valid = torch.zeros(7, dtype=torch.bool)
            valid[[2, 4]] = True
            sample, params = Sample(pair, valid, 3, f"gap{gap}"), None
            if adapt:
                unadapted.append(gap)
        output += [learner.predict(sample, params, time=time).clamp(0, 1) for time in times]
        output.append(frames[gap + 1])
    if adapt:
        log.info("adapted %d of %d windows (gaps between input frames)", count - 1 - len(unadapted), count - 1)
    if unadapted:
        log.info(
            "gaps %s (between frames %s) have no 4-frame window: interpolated without adaptation",
            unadapted,
            ", ".join(f"{gap}-{gap + 1}" for gap in unadapted),
        )
    return torch.stack(output)


def write_output(frames: torch.Tensor, path: Path, fps: float, kind: str | None = None) -> None:
    """Numbered PNGs into a folder, or an H.264 video (yuv420p, even size) at ``fps``.

    kind: ``'video'`` or ``'frames'``; default from the suffix. Writes exactly where it is told:
    the CLI points it at a temporary sibling (:func:`write_output_atomically`).
    """
    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    kind = kind or ("video" if path.suffix.lower() in VIDEO_SUFFIXES else "frames")
    if kind == "video":
        import av

        height, width = pixels.shape[1:3]
        # yuv420p needs even sizes: drop a last odd row/column rather than rescale.
        pixels = np.ascontiguousarray(pixels[:, : height - height % 2, : width - width % 2])
        path.parent.mkdir(parents=True, exist_ok=True)
        rate = Fraction(fps).limit_denominator(1001)
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height = pixels.shape[2], pixels.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for image in pixels:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        return
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(path / f"frame_{index:06d}.png")


def write_output_atomically(frames: torch.Tensor, target: OutputTarget, fps: float) -> None:
    """``write_output`` into a temporary sibling, renamed over ``target.path`` when complete."""
    import av

    with replace_atomically(target) as temporary:
        try:
            write_output(frames, temporary, fps, kind=target.kind)
        except av.error.FFmpegError as error:  # PyAV's errors name the temporary, not the output
            if isinstance(error, OSError) and error.errno:  # av.error.OSError: ENOSPC, EROFS, ...
                raise describe_os_error(error, target.path) from error
            raise OutputError(target.path, f"encoding failed: {error}") from error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m savfi_core.interpolate", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="folder of frames or a video file")
    parser.add_argument("--model", required=True, help="backbone name (savfi_core.backbones.list_models())")
    parser.add_argument("--weights", required=True, help="'none', 'default', a network checkpoint or a MetaLearner checkpoint")
    parser.add_argument("--size", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--algorithm", choices=ALGORITHMS, default=None, help="for a plain network: the inner loop (default maml)")
    parser.add_argument("--adapt-steps", type=int, default=None, help="inner steps per window (default: the checkpoint's, or 1)")
    parser.add_argument("--inner-lr", type=float, default=1e-5, help="inner learning rate for a plain network")
    parser.add_argument("--inner-rule", choices=["sgd", "adam", "adamax"], default="adam", help="inner rule for a plain network")
    parser.add_argument("--times", type=int, default=2, choices=[2, 4, 8], help="frame-rate factor")
    parser.add_argument("--no-adapt", action="store_true", help="the plain network, no test-time adaptation")
    parser.add_argument("--downscale", type=int, default=1, help="integer area downscaling of the input")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N input frames")
    parser.add_argument("--fps", type=float, default=None, help="input frame rate (default: the video's, or 25 for a folder)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (PNGs) or video file (.mp4 ...)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output video or non-empty folder (as a whole)")
    parser.add_argument("--strict", action="store_true", help="refuse a video with fewer frames than its container declares")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (--weights none) and any sampling")
    parser.add_argument("--debug", action="store_true", help="on error, print the traceback instead of one line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        # Scoped, not global: main() is also called in-process (tests, notebooks), and a global
        # switch would leave autograd off for the caller. Adaptation re-enables it where needed.
        with torch.no_grad():
            return _interpolate(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"savfi: error: {error}", file=sys.stderr)
        return 2


# Errors that are about the user's input or output, reported as one line (--debug: traceback).
# Their messages name the path: DatasetError and OutputError by contract, CheckpointError too.
USER_ERRORS = (DatasetError, OutputError, CheckpointError, FileNotFoundError)


def _interpolate(args: argparse.Namespace) -> int:
    from savfi_core.train.common import seed_everything

    target = check_output(args.out, overwrite=args.overwrite)  # before any decoding or compute
    if not args.input.exists():
        raise DatasetError(f"{args.input}: input not found (a folder of frames or a video file)")
    frames, input_fps = read_input(args.input, args.downscale, args.max_frames, strict=args.strict)
    if frames.shape[0] < 2:
        raise DatasetError(f"{args.input}: need at least 2 frames to interpolate, got {frames.shape[0]}")
    fps = args.fps or input_fps or 25.0
    seed_everything(args.seed)  # before the model exists: random weights are then reproducible
    learner = build_learner(args)
    learner.model.eval()
    steps = args.adapt_steps if args.adapt_steps is not None else learner.config.inner_steps
    log.info(
        "%d frames of %dx%d from %s; %s; x%d -> %d frames at %.3f fps",
        frames.shape[0],
        frames.shape[3],
        frames.shape[2],
        args.input,
        "no adaptation" if args.no_adapt else f"{steps} adaptation step(s) per window",
        args.times,
        args.times * (frames.shape[0] - 1) + 1,
        fps * args.times,
    )
    if learner.model.supports_time:
        log.info("%s takes the time: t = %s predicted directly", args.model,
                 ", ".join(f"{index / args.times:g}" for index in range(1, args.times)))
        frames = multiply_frame_rate(frames, learner, steps, adapt=not args.no_adapt, factor=args.times)
    else:
        if args.times > 2:
            log.info("%s predicts only the middle frame: x%d by %d rounds of doubling", args.model, args.times, int(np.log2(args.times)))
        for _ in range(int(np.log2(args.times))):
            frames = multiply_frame_rate(frames, learner, steps, adapt=not args.no_adapt)
    replacing = target.path.exists()
    write_output_atomically(frames, target, fps * args.times)
    log.info("wrote %d frames to %s%s", frames.shape[0], args.out, " (replacing the previous output)" if replacing else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
