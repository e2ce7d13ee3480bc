"""Launching the training ranks: torchrun or the DeepSpeed launcher, or in-process for one.

The number of ranks is the rule's GPU resource (one rank per GPU) or, without GPUs,
``training.cpu_ranks`` CPU ranks on DeepSpeed's CPU accelerator (``DS_ACCELERATOR=cpu``,
the gloo backend, ``TrainingArguments(use_cpu=True)``). The rule's threads are shared out
among the ranks. A single rank needs no launcher: it runs in this process with the
environment torchrun would give it, which saves a second interpreter start.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("care.train")

LAUNCHERS = ("torchrun", "deepspeed")


@dataclass(frozen=True)
class Plan:
    """Where and how the ranks run."""

    ranks: int
    device: str  # "cuda" or "cpu"
    threads_per_rank: int
    launcher: str

    @classmethod
    def make(cls, gpus: int, cpu_ranks: int, threads: int, launcher: str) -> Plan:
        if launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {launcher!r}; expected one of {LAUNCHERS}")
        ranks = gpus if gpus > 0 else max(1, cpu_ranks)
        return cls(ranks, "cuda" if gpus > 0 else "cpu", max(1, threads // ranks), launcher)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(self.threads_per_rank)
        if self.device == "cpu":
            env["DS_ACCELERATOR"] = "cpu"
            env["CUDA_VISIBLE_DEVICES"] = ""
            if self.launcher == "deepspeed":
                # DeepSpeed's CPU accelerator counts NUMA nodes as devices unless told
                env["LOCAL_SIZE"] = str(self.ranks)
        return env

    def command(self, job_path: str | Path) -> list[str]:
        module = ["care.train.trainer", "--job", str(job_path)]
        if self.launcher == "deepspeed":
            # --no_local_rank: the ranks read LOCAL_RANK from the environment, as under torchrun
            return [
                sys.executable,  # the `deepspeed` script of this interpreter
                "-m",
                "deepspeed.launcher.runner",
                *self.deepspeed_devices(),
                "--master_port",
                str(free_port()),
                "--no_local_rank",
                "--module",
                *module,
            ]
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(self.ranks),
            "-m",
            *module,
        ]

    def deepspeed_devices(self) -> list[str]:
        """The DeepSpeed launcher's device selection: the job's GPUs, not GPUs 0..N-1.

        ``--num_gpus N`` makes the launcher ignore ``CUDA_VISIBLE_DEVICES`` (which SLURM
        sets to the job's GPUs) and use devices 0..N-1, so the visible ones are named.
        """
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if self.device == "cpu" or not visible:
            return ["--num_gpus", str(self.ranks)]
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        if len(devices) < self.ranks:
            raise RuntimeError(
                f"training.gpus is {self.ranks} but CUDA_VISIBLE_DEVICES={visible} "
                f"names {len(devices)} GPU(s)"
            )
        return ["--include", "localhost:" + ",".join(devices[: self.ranks])]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    plan: Plan,
    job: dict,
    job_path: str | Path,
    keep_fds: tuple[int, ...] = (),
    on_epoch_saved=None,
) -> None:
    """Run the ranks to completion; a failed rank raises ``CalledProcessError``.

    ``keep_fds`` stay open in the launcher (the checkpoint directory's lock: it stays held
    while ranks run, even if this process is killed). ``on_epoch_saved(epoch)`` scores each
    epoch as the ranks save it while they wait: called in-process for
    one rank, else when the ranks' marker says so (:func:`care.train.trainer.epoch_handshake`).
    """
    if plan.ranks == 1:
        run_in_process(plan, job, on_epoch_saved)
        return
    command = plan.command(job_path)
    log.info("launching %d %s ranks: %s", plan.ranks, plan.device, " ".join(command))
    if on_epoch_saved is None:
        subprocess.run(command, env=plan.env(), check=True, pass_fds=keep_fds)
        return
    from care.train.trainer import HANDSHAKE_ENV, handshake_dir

    markers = handshake_dir(job["checkpoint_dir"])
    shutil.rmtree(markers, ignore_errors=True)  # a killed job's markers mean nothing now
    env = {**plan.env(), HANDSHAKE_ENV: "1"}
    ranks = subprocess.Popen(command, env=env, pass_fds=keep_fds)
    try:
        while ranks.poll() is None:
            for saved in sorted(markers.glob("saved-*")):
                epoch = int(saved.name.removeprefix("saved-"))
                if not (markers / f"scored-{epoch}").exists():
                    on_epoch_saved(epoch)
                    (markers / f"scored-{epoch}").touch()
            time.sleep(1.0)
    except BaseException:
        ranks.terminate()  # they would wait for a score that never comes
        ranks.wait()
        raise
    if ranks.returncode != 0:
        raise subprocess.CalledProcessError(ranks.returncode, command)


def run_in_process(plan: Plan, job: dict, on_epoch_saved=None) -> None:
    """One rank in this process, with the environment a launcher would set (then restored)."""
    from care.train.trainer import run_worker

    saved = dict(os.environ)
    os.environ.update(
        {
            k: v
            for k, v in plan.env().items()
            if k in ("OMP_NUM_THREADS", "DS_ACCELERATOR", "CUDA_VISIBLE_DEVICES")
        }
    )
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
        }
    )
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    try:
        run_worker(job, on_epoch_saved)
    finally:
        os.environ.clear()
        os.environ.update(saved)
