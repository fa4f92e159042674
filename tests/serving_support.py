"""Register real Adult model versions quickly (no tuning), the way `stages.train_and_register` does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import manifest_tags
from autopilot.config import LoadedConfig, load_config
from autopilot.settings import Settings
from tests.helpers import ADULT_CONFIG, PROJECT

TOKEN = "process-test-token-0123456789abcdef"

HGB = {"family": "hist_gradient_boosting", "prep.cat_impute": "most_frequent", "hgb.cat_encoding": "native",
       "prep.min_frequency": 0.0, "hgb.learning_rate": 0.1, "hgb.max_iter": 60, "hgb.max_leaf_nodes": 31,
       "hgb.min_samples_leaf": 20, "hgb.l2_regularization": 0.1}
LIGHTGBM = {"family": "lightgbm", "prep.cat_impute": "most_frequent", "lgbm.cat_encoding": "native",
            "prep.min_frequency": 0.0, "lgbm.learning_rate": 0.1, "lgbm.n_estimators": 60, "lgbm.num_leaves": 31,
            "lgbm.min_child_samples": 20, "lgbm.colsample_bytree": 0.8, "lgbm.reg_lambda": 0.1,
            "lgbm.min_data_per_group": 20, "lgbm.cat_smooth": 5.0}
LINEAR = {"family": "linear", "prep.num_impute": "median", "prep.scaling": "standard",
          "prep.cat_impute": "most_frequent", "linear.cat_encoding": "onehot", "prep.min_frequency": 0.0,
          "linear.C": 1.0}


def adult_cfg(**serving: Any) -> LoadedConfig:
    """The demo config, with `deployment.serving` overrides."""
    cfg = load_config(ADULT_CONFIG)
    if not serving:
        return cfg
    deployment = cfg.deployment.model_copy(update={"serving": cfg.deployment.serving.model_copy(update=serving)})
    return cfg.model_copy(update={"deployment": deployment})


def feature_rows(adult_frames: tuple[pd.DataFrame, pd.DataFrame], cfg: LoadedConfig, n: int = 50,
                 split: int = 1) -> list[dict[str, Any]]:
    """`n` real rows as JSON-ready records (NaN -> None)."""
    from autopilot.data.sources import canonicalize

    frame = canonicalize(adult_frames[split].head(n), cfg)[list(cfg.features)]
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            for row in frame.to_dict("records")]


def register_version(settings: Settings, cfg: LoadedConfig, adult_frames: tuple[pd.DataFrame, pd.DataFrame],
                     params: dict[str, Any] = HGB, rows: int = 3000, alias: str | None = "champion",
                     mutate: Callable[[Any], None] | None = None) -> Any:
    """Fit, log (skops, signature, manifest tag) and register one version; optionally point `alias` at it.

    `mutate` may change the fitted pipeline in place before it is logged (a defective model).
    """
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import encode_target, feature_frame
    from autopilot.modeling.training import fit_pipeline
    from autopilot.pipeline.training import signature_for

    frame = canonicalize(adult_frames[0].sample(rows, random_state=len(params)), cfg)
    X, y = feature_frame(frame, cfg), encode_target(frame, cfg)
    pipeline = fit_pipeline(params, cfg, X, y, seed=0)
    if mutate is not None:
        mutate(pipeline)
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("serving-test", settings.mlflow_artifact_root)
    with reg.start_run(experiment) as run:
        signature = signature_for(cfg, X, pipeline.predict_proba(X.head(20)))
        info = run.log_sklearn_model(pipeline, X.head(5), signature, allow_pickle=False, predict_fn="predict_proba")
    folder = reg.download(info.model_uri)
    manifest = registry.sha256_manifest(folder)
    tags = manifest_tags(cfg.registered_model_name, manifest, settings.signing_key)  # signed when keyed
    version = reg.create_version(cfg.registered_model_name, info.model_uri, run.run_id,
                                 {**tags, "autopilot.family": params["family"]})
    if alias:
        reg.set_alias(cfg.registered_model_name, alias, int(version.version))
    return version


def package_dir(reg: registry.Registry, version: Any, dest: Path) -> Path:
    """A package folder as a container sees it: the model files plus `autopilot-manifest.json`."""
    from autopilot.serving.model import PACKAGE_MANIFEST

    src = reg.download(version.source)
    shutil.copytree(src, dest)
    (dest / PACKAGE_MANIFEST).write_text(json.dumps(registry.sha256_manifest(src), sort_keys=True))
    return dest


def corrupt_version(reg: registry.Registry, version: Any) -> None:
    """Flip one byte of a registered version's stored model file (as a bad disk or an attacker would)."""
    folder = reg.download(version.source)
    # A download from a local store without a destination is the stored folder itself: edit it in place.
    target = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in {".skops", ".pkl"})
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `autopilot serve` process on loopback."""

    def __init__(self, config: Path, home: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "AUTOPILOT_HOME": str(home), "AUTOPILOT_SERVING_TOKEN": TOKEN,
               "PYTHONPATH": str(PROJECT / "src")}
        self.log = (home / f"serve-{port}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "autopilot.cli", "serve", str(config),
                                      "--port", str(port)], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready: {Path(self.log.name).read_text()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.log.close()


def snapshots(settings: Settings, cfg: LoadedConfig, adult_frames: Any) -> dict[str, Any]:
    """Snapshots of 2000 train and test rows in the settings' store, as `snapshot_data` returns them."""
    from autopilot.adapters.storage import open_store
    from autopilot.data.snapshot import write_snapshot
    from autopilot.data.sources import canonicalize

    store = open_store(settings.artifact_root)
    out = {}
    for split, frame in zip(("train", "test"), adult_frames, strict=True):
        ref = write_snapshot(canonicalize(frame.head(2000), cfg), store, f"rollout test {split}")
        out[split] = {"digest": ref.digest, "uri": ref.uri}
    return {"snapshots": out}
