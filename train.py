"""Train one LRA model: `python train.py task=listops attn=lot` (Hydra; see configs/README.md)."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lra.runner import run
from lra.summary import print_summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    record = run(cfg, HydraConfig.get().runtime.output_dir)
    print_summary(record)
    return record["metrics"]["test_acc"]


if __name__ == "__main__":
    main()
