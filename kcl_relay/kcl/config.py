"""What the supervisor tells its record processors: one JSON value in the environment, inherited through the JVM.

The environment, not a file or a command line, because the target URL may carry a password.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from kcl_relay.masking import mask_secrets, masked_eq, masked_repr
from kcl_relay.options import ProcessorOptions

ENV_NAME = "KCL_RELAY_PROCESSOR"


@masked_eq  # an assertion diff of two configs never shows the URL's password (kcl_relay.masking)
@dataclass(frozen=True, eq=False, repr=False)
class ProcessorConfig(ProcessorOptions):
    target_url: str  # may carry the database password: masked in repr and str
    table: str | None
    state_dir: str
    seqno_shard: str | None = None  # the shard that holds `seqno`

    def __repr__(self) -> str:
        return masked_repr(self, target_url=repr(mask_secrets(self.target_url)))

    def to_env(self) -> dict[str, str]:
        return {ENV_NAME: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> ProcessorConfig:
        raw = os.environ.get(ENV_NAME)
        if not raw:
            raise RuntimeError(f"{ENV_NAME} is not set: the processor runs under `kcl-relay`, not on its own")
        return cls(**json.loads(raw))
