"""Optional live dashboards beside metrics.jsonl (which stays the record): `--report-to tensorboard`."""
import math
import os

from common.errors import UserError

STEP_KEYS = ("iter", "epoch", "step")
CHOICES = ("none", "tensorboard")


def add_report_arg(group) -> None:
    group.add_argument("--report-to", default="none", choices=CHOICES,
                       help="also write every metrics row to a dashboard: tensorboard writes "
                            "RUN_DIR/tensorboard/ (view with `tensorboard --logdir runs`)")


class TensorBoard:
    """Mirrors metric rows as scalars: numeric columns only, step from the row's iter/epoch/step column."""

    def __init__(self, folder: str):
        self.SummaryWriter = summary_writer()
        self.folder = os.path.join(folder, "tensorboard")
        self.writer = None  # opened at the first row, after a resume has said which steps to drop
        self.purge_step = None
        self.rows = 0

    def purge_after(self, last: int) -> None:
        """On resume: hide the events of steps after `last` that a run which died later had written."""
        self.purge_step = last + 1

    def write(self, row: dict) -> None:
        if self.writer is None:
            self.writer = self.SummaryWriter(self.folder, purge_step=self.purge_step)
        step = next((row[k] for k in STEP_KEYS if isinstance(row.get(k), (int, float))), self.rows)
        self.rows += 1
        for key, value in row.items():
            if key in STEP_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, int(step))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("--report-to tensorboard needs the tensorboard package; `pip install tensorboard` or "
                        "drop the flag (metrics.jsonl is written either way)") from None
    return SummaryWriter


def check_available(report_to: str | None) -> None:
    """A UserError now, before a run folder is made, when the dashboard's package is missing."""
    if report_to == "tensorboard":
        summary_writer()


def open_dashboard(report_to: str | None, folder: str):
    """A dashboard for `report_to`, or None for 'none'."""
    if not report_to or report_to == "none":
        return None
    if report_to == "tensorboard":
        return TensorBoard(folder)
    raise UserError(f"--report-to {report_to}: choose one of {', '.join(CHOICES)}")
