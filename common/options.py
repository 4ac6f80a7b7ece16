"""The flag groups every entry point spells the same way: device, data loading, output folder."""
from common.config import non_negative_int, positive_int

DEVICES = ("auto", "cuda", "cpu")
CORRUPT_POLICIES = ("skip", "error")


def add_device_arg(group, default: str = "auto", choices=DEVICES) -> None:
    group.add_argument("--device", default=default, choices=list(choices),
                       help="auto = CUDA when available, else the CPU")


def add_loader_args(group, workers: int = 4, on_corrupt: bool = True, eval_batch_size: bool = True,
                    workers_help: str = "data-loading worker processes") -> None:
    """--workers, --on-corrupt (a corrupt image: skipped with a warning, or stops the run) and
    --eval-batch-size (None: the stage's own default, see eval_batch_size())."""
    group.add_argument("--workers", type=non_negative_int, default=workers, help=workers_help)
    if on_corrupt:
        group.add_argument("--on-corrupt", default="skip", choices=list(CORRUPT_POLICIES),
                           help="a corrupt image is skipped with a warning, or stops the run")
    if eval_batch_size:
        group.add_argument("--eval-batch-size", type=positive_int, default=None,
                           help="images per evaluation batch (default: twice --batch-size)")


def eval_batch_size(args) -> int:
    """--eval-batch-size, else twice the training batch size."""
    return args.eval_batch_size or 2 * args.batch_size


def add_output_arg(group, default=None, help: str = "output folder") -> None:
    group.add_argument("--output-dir", default=default, help=help)
