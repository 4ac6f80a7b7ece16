"""Optional live dashboards beside metrics.jsonl (which stays the record): `--report-to tensorboard`."""
import math
import os

from common.errors import UserError

STEP_KEYS = ("iter", "epoch", "step")
CHOICES = ("none", "tensorboard")


def add_report_arg(group) -> None:
    group.add_argument("--report-to", default="none", choices=CHOICES,
                       help="also write every metrics row to a dashboard: tensorboard writes RUN_DIR/tensorboard/ "
                            "(view with `tensorboard --logdir runs`)")


class TensorBoard:
    """Mirrors metric rows as scalars: numeric columns only, step from the row's iter/epoch/step column."""

    def __init__(self, folder: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--report-to tensorboard needs the tensorboard package; `pip install tensorboard` or "
                            "drop the flag (metrics.jsonl is written either way)") from None
        self.writer = SummaryWriter(os.path.join(folder, "tensorboard"))
        self.rows = 0

    def write(self, row: dict) -> None:
        step = next((row[k] for k in STEP_KEYS if isinstance(row.get(k), (int, float))), self.rows)
        self.rows += 1
        for key, value in row.items():
            if key in STEP_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_dashboard(report_to: str | None, folder: str):
    """A dashboard for `report_to`, or None for 'none'."""
    if not report_to or report_to == "none":
        return None
    if report_to == "tensorboard":
        return TensorBoard(folder)
    raise UserError(f"--report-to {report_to}: choose one of {', '.join(CHOICES)}")
