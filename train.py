"""Train one LRA model: `python train.py task=listops attn=lot` (Hydra; see configs/README.md)."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lotformer.attention import UnknownAttentionError
from lra.errors import UserError
from lra.runner import failure_record, run
from lra.summary import print_summary

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        record = run(cfg, run_dir)
    except (UserError, UnknownAttentionError) as err:
        failure_record(cfg, run_dir, err)
        log.error("%s", err)
        print(f"\nerror: {err}\n", file=sys.stderr)
        if multirun:
            return None  # the record says "failed"; the rest of the sweep goes on
        sys.exit(2)
    except Exception as err:  # a bug, not a setting: keep the traceback, but leave a record
        failure_record(cfg, run_dir, err)
        if not multirun:
            raise
        log.exception("this job failed; the sweep goes on (its results.json says status: failed)")
        return None
    print_summary(record)
    if record.status != "completed" and not multirun:
        sys.exit(3)  # diverged: the summary and the record say why
    return record.metrics.test_acc


if __name__ == "__main__":
    main()
