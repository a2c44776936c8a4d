"""What every job shares: its command line (`python -m jobs.NAME --config FILE [--address ADDR] ...`), its log
set-up, and the one filter for library warnings people should not see once per step."""

from __future__ import annotations

import argparse
import logging
import warnings

import yaml
from pydantic import BaseModel


def job_arguments(argv: list[str] | None, doc: str, config_cls: type[BaseModel],
                  *extra: tuple[str, dict]) -> tuple[BaseModel, argparse.Namespace]:
    """Parse the job's flags, set up logging, and load its typed config from the YAML file."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"YAML file with {config_cls.__name__} fields")
    parser.add_argument("--address", default=None, help="Ray address to join (e.g. auto); default: start one")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_known_warnings()
    with open(args.config) as f:
        return config_cls.model_validate(yaml.safe_load(f) or {}), args


def quiet_known_warnings() -> None:
    """Hide deprecation notices that libraries raise on every call and a user cannot act on: DeepSpeed calls
    torch.distributed's deprecated collectives (a FutureWarning per step and rank). Called in each process that
    runs them: the driver and every training worker."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch\.distributed|deepspeed)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.distributed")
