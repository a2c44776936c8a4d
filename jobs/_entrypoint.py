"""What every job shares: its command line (`python -m jobs.NAME --config FILE [--set KEY=VALUE ...]
[--address ADDR] ...`), its log set-up, and the one filter for library warnings people should not see once per step."""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from pydantic import BaseModel

from vidgen.config import load_config


def job_arguments(argv: list[str] | None, doc: str, config_cls: type[BaseModel],
                  *extra: tuple[str, dict]) -> tuple[BaseModel, argparse.Namespace]:
    """Parse the job's flags, set up logging, and load its typed config the way `vidgen` commands do
    (`vidgen.config.load_config`: the YAML file, then each --set); a config that does not validate is a
    ConfigError naming the key."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path,
                        help=f"YAML file with {config_cls.__name__} fields; --set overrides it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="set a config key over the file's (repeatable): a dotted key reaches into a section "
                             "(--set s3.region=eu-west-1), the value is read as YAML")
    parser.add_argument("--address", default=None, help="Ray address to join (e.g. auto); default: start one")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quiet_known_warnings()
    return load_config(config_cls, args.config, args.overrides), args


def quiet_known_warnings() -> None:
    """Hide deprecation notices that libraries raise on every call and a user cannot act on: DeepSpeed calls
    torch.distributed's deprecated collectives (a FutureWarning per step and rank). Called in each process that
    runs them: the driver and every training worker. Also torch's note, once per norm layer, that an RMSNorm with
    float32 weights under bf16 autocast (diffusers' transformers, trained so) takes the unfused kernel."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch\.distributed|deepspeed)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.distributed")
    warnings.filterwarnings("ignore", category=UserWarning, message=r"Mismatch dtype between input and weight")
