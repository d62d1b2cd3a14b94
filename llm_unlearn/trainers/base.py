"""The shared base of every unlearning method: ``UnlearnConfig`` and ``UnlearnTrainer``.

A batch is ``{"forget": {...}, "retain": {...}}`` (plus method-specific sides such as ``alt`` or ``idk``), each side
holding ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding). Methods override
:meth:`UnlearnTrainer.unlearn_losses`, which returns named scalar losses with the total under ``"loss"``; every
named term is logged through the Trainer (so ``report_to`` sees it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..data.pairing import PairSampler
from ..data.schema import CHAT_DATE, CHAT_DATE_HELP, SYSTEM_PROMPT_HELP
from ..devices import DEVICE_HELP, DTYPE_HELP, check_dtype, pin_single_process_gpu
from . import losses as L

logger = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient norm or weight: nothing may be saved as unlearned."""


@dataclass
class UnlearnConfig(TrainingArguments):
    r"""Arguments shared by every unlearning method (on top of ``transformers.TrainingArguments``).

    Parameters:
        method (`str`, defaults to `"regularized_ft"`): the unlearning method (see ``llm_unlearn.trainers.METHODS``).
        model_name_or_path (`str`): the model to unlearn: a local folder or a Hub id.
        data (`str`): TOFU-schema data: a local folder or a Hub dataset id (``locuslab/TOFU``).
        data_format (`str`, defaults to `"qa"`): ``qa`` (TOFU schema) or ``text`` (MUSE-style documents, chunked
            into ``max_length``-token pieces; see ``llm_unlearn.data.text``).
        forget_split (`str`, defaults to `"forget10"`, text: `"raw/forget"`): the split to forget.
        retain_split (`str`, defaults to the ``retainXX`` matching ``forget_split``, text: `"raw/retain1"`).
        max_length (`int`, defaults to `128`): longest tokenized QA pair.
        gamma (`float`, defaults to `1.0`): weight of the forget term.
        alpha (`float`, defaults to `1.0`): weight of the retain term.
        use_peft (`bool`, defaults to `False`): train LoRA adapters instead of all weights.
        lora_r (`int`, defaults to `8`), lora_alpha (`int`, defaults to `16`), lora_dropout (`float`, defaults to
            `0.0`), lora_target_modules (`str`, defaults to `"all-linear"`): the LoRA adapters.
        merge_adapter (`bool`, defaults to `False`): under LoRA, save the merged model instead of the adapter.
        selection (`str`, defaults to `"none"`): ``hessian`` updates only the parameters with the largest
            Hessian-diagonal entries (see ``llm_unlearn.selection``); ``random`` as many entries drawn at random
            (seeded by ``seed``), the control.
        hessian_estimator (`str`, defaults to `"fisher"`): ``fisher``, ``ggn`` or ``hutchinson``.
        hessian_data (`str`, defaults to `"forget"`): scoring data: ``forget``, ``retain`` or ``both``.
        hessian_samples (`int`, defaults to `256`): scoring examples per side, a sample seeded by ``seed`` (all of a
            side's examples when it has fewer).
        hessian_probes (`int`, defaults to `8`): Hutchinson probes.
        param_ratio (`float`, defaults to `0.05`): fraction of entries selected.
        granularity (`str`, defaults to `"per_module"`): top entries per parameter tensor, or ``global``.
        selection_exclude (`str`, defaults to `"embed,lm_head,norm"`): comma-separated name fragments never selected.
        lora_top_modules (`int`, defaults to `4`): under LoRA + selection, adapters go on this many top modules.
        overwrite_output (`bool`, defaults to `False`): replace a non-empty ``output_dir`` (only once the new run
            has finished: training writes into ``.NAME.partial`` beside it).
        resume_from_checkpoint (`str`, *optional*): a checkpoint folder, or ``true`` for the newest checkpoint of the
            interrupted run into ``output_dir``.
        eval_reference (`str`, *optional*): retrained reference (model folder or its eval JSON): when given, the
            unlearned model is evaluated against it after training (on ``data``, ``forget_split``) and the model card
            of ``push_to_hub`` carries the evaluation.
    """

    method: str = field(default="regularized_ft", metadata={"help": "Unlearning method name."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Model to unlearn (folder or Hub id)."})
    data: str | None = field(default=None, metadata={"help": "TOFU-schema data: local folder or Hub dataset id."})
    data_format: str = field(default="qa", metadata={"help": "qa (TOFU schema) or text (MUSE-style documents)."})
    forget_split: str | None = field(
        default=None,
        metadata={
            "help": "Split to forget: forgetXX (default forget10); text: raw/forget. Several, comma-separated "
            "(forget01,forget05,forget10), are sequential requests, each unlearned from the previous output and "
            "evaluated against one --eval_reference entry per request."
        },
    )
    retain_split: str | None = field(
        default=None, metadata={"help": "Retain split (default: the retainXX of forget_split; text: raw/retain1)."}
    )
    max_length: int = field(
        default=128,
        metadata={
            "help": "Maximum tokens of a QA pair; a longer one loses the start of its prompt first, then the "
            "end of its answer, and a warning counts them per split."
        },
    )
    chat_date: str = field(default=CHAT_DATE, metadata={"help": CHAT_DATE_HELP})
    system_prompt: str | None = field(default=None, metadata={"help": SYSTEM_PROMPT_HELP})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the forget term."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the retain term."})
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules."})
    merge_adapter: bool = field(default=False, metadata={"help": "Under LoRA, save the merged model."})
    selection: str = field(
        default="none",
        metadata={
            "help": "Parameter selection: none, hessian (the top param_ratio entries of the Hessian diagonal), or "
            "random (as many entries at random: the control Hessian selection must beat)."
        },
    )
    hessian_estimator: str = field(default="fisher", metadata={"help": "fisher, ggn or hutchinson."})
    hessian_data: str = field(default="forget", metadata={"help": "Scoring data: forget, retain or both."})
    hessian_samples: int = field(
        default=256,
        metadata={
            "help": "Scoring examples per side (forget and/or retain, see --hessian_data): a sample seeded by --seed "
            "of that side's QA pairs (text: chunks), all of them when the side has fewer. Also the retain sample "
            "of --retention_mask_ratio."
        },
    )
    hessian_probes: int = field(default=8, metadata={"help": "Rademacher probes of the Hutchinson estimator."})
    param_ratio: float = field(default=0.05, metadata={"help": "Fraction of parameter entries selected."})
    granularity: str = field(default="per_module", metadata={"help": "Top entries per_module or global."})
    selection_exclude: str = field(
        default="embed,lm_head,norm", metadata={"help": "Comma-separated name fragments never selected."}
    )
    lora_top_modules: int = field(default=4, metadata={"help": "Under LoRA + selection: modules given adapters."})
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Replace a non-empty output_dir (only once the new run has finished)."},
    )
    eval_reference: str | None = field(
        default=None,
        metadata={
            "help": "Retrained reference (model folder or its eval JSON): when given, the unlearned model is "
            "evaluated against it after training (on --data, --forget_split) and the card of --push_to_hub carries "
            "the evaluation."
        },
    )

    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue an interrupted run: a checkpoint folder, or true for the newest checkpoint that the "
            "interrupted run into output_dir kept in .NAME.partial/ beside it (checkpoints are written with "
            "--save_strategy steps --save_steps N). The run ends with the same weights as an uninterrupted one."
        },
    )

    # TrainingArguments defaults changed for unlearning runs.
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoint strategy (the final model is saved)."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Loggers (tensorboard, wandb)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep nested forget/retain batches."})

    dose_every: int = field(
        default=0,
        metadata={
            "help": "Self-dosing: every this many optimizer steps compare the forget items with never-seen items "
            "(the dosing half of the holdout split) and stop when they look alike, when the forget items become less "
            "likely than never-seen ones, or when the retain probe loses utility (see llm_unlearn.trainers.dosing); "
            "max_steps is then an upper bound. 0 = off: a fixed step count."
        },
    )
    dose_tolerance: float = field(
        default=0.1, metadata={"help": "Self-dosing: stop once the KS p-value of forget vs holdout losses reaches it."}
    )
    dose_retain_guard: float = field(
        default=0.05,
        metadata={"help": "Self-dosing: stop when the retain probe's mean probability falls by this fraction."},
    )
    dose_items: int = field(default=64, metadata={"help": "Self-dosing: items per probe (forget, holdout, retain)."})
    dose_holdout_split: str | None = field(
        default=None,
        metadata={
            "help": "Self-dosing: the never-seen split whose dosing half is compared (default: the holdoutXX of "
            "forget_split); evaluations of the run report on its other half."
        },
    )

    # ``device`` is a property of TrainingArguments (the device the Trainer runs on): the request is ``run_device``,
    # spelled ``--device`` on the command line and ``device:`` in a recipe.
    run_device: str = field(default="auto", metadata={"help": DEVICE_HELP, "aliases": ["--device"]})
    torch_dtype: str = field(default="auto", metadata={"help": DTYPE_HELP})

    needs_reference: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        self._check_numbers()
        # Before any CUDA call: a single process asked for cuda:N sees that GPU alone (see llm_unlearn.devices).
        self.run_device = pin_single_process_gpu(self.run_device)
        self.torch_dtype = check_dtype(self.torch_dtype)
        if self.run_device == "cpu":
            self.use_cpu = True
        elif self.run_device != "auto":
            from ..devices import resolve_device

            resolve_device(self.run_device)  # a GPU that is not here: a clear error now, not after loading
        if not torch.cuda.is_available() or self.run_device == "cpu":
            # A mixed-precision request that cannot take effect is an error, not a silent reset (the record would
            # otherwise claim a precision that never ran).
            for flag in ("bf16", "fp16"):
                if getattr(self, flag):
                    where = (
                        "this run is on the CPU (--device cpu)"
                        if torch.cuda.is_available()
                        else "this machine has none"
                    )
                    raise ValueError(f"--{flag} true needs a GPU and {where}: pass --{flag} false")
            # CPU: no gradient checkpointing (~8x slower there).
            self.activation_checkpointing = False
            self.use_cpu = True
        super().__post_init__()
        from ..data.schema import BenchmarkSplits

        if self.data_format == "qa":
            self.forget_split = self.forget_split or "forget10"
            self.retain_split = self.retain_split or BenchmarkSplits.from_forget(self.forget_split).retain
        elif self.data_format == "text":
            self.forget_split = self.forget_split or "raw/forget"
            self.retain_split = self.retain_split or "raw/retain1"
        else:
            raise ValueError(f"--data_format must be qa or text, got {self.data_format!r}")
        for name, value, allowed in (
            ("selection", self.selection, ("none", "hessian", "random")),
            ("hessian_estimator", self.hessian_estimator, ("fisher", "ggn", "hutchinson")),
            ("hessian_data", self.hessian_data, ("forget", "retain", "both")),
            ("granularity", self.granularity, ("per_module", "global")),
        ):
            if value not in allowed:
                raise ValueError(f"--{name} {value!r} is not one of {', '.join(allowed)}")
        if not 0.0 < self.param_ratio <= 1.0:
            raise ValueError(f"--param_ratio must be in (0, 1], got {self.param_ratio}")
        if self.gamma < 0 or self.alpha < 0:
            raise ValueError("--gamma and --alpha must be non-negative")
        if self.merge_adapter and not self.use_peft:
            raise ValueError("--merge_adapter only applies with --use_peft")
        if self.dose_every < 0 or self.dose_items < 2:
            raise ValueError("--dose_every must be >= 0 (0: off) and --dose_items >= 2")
        if not 0.0 < self.dose_tolerance <= 1.0 or not 0.0 <= self.dose_retain_guard < 1.0:
            raise ValueError("--dose_tolerance must be in (0, 1] and --dose_retain_guard in [0, 1)")
        if self.dose_every and self.data_format != "qa":
            raise ValueError(
                "self-dosing (--dose_every) compares QA items with a holdout split: --data_format qa only"
            )

    @property
    def n_gpu(self) -> int:
        """One GPU per process: a single process never wraps the model in ``nn.DataParallel`` (several GPUs are used
        through ``accelerate launch``, one process each)."""
        return min(super().n_gpu, 1)

    def load_dtype(self):
        """The dtype the model (and its frozen reference) is loaded in, from the one resolver."""
        from ..devices import resolve_dtype

        precision = "bf16" if self.bf16 else ("fp16" if self.fp16 else "no")
        return resolve_dtype(self.torch_dtype, self.device, precision)

    def _check_numbers(self) -> None:
        """Numbers that would silently break a run, refused before any work: NaN/inf anywhere, and a run that
        cannot move the weights (an untouched target must never be saved as "unlearned")."""
        from ..validation import check_finite_fields, check_positive, check_seed

        check_finite_fields(self)
        check_positive(
            self,
            ("learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length"),
            minimum={"weight_decay": 0.0, "warmup_steps": 0.0, "max_grad_norm": 0.0},
        )
        check_positive(self, ("lora_r", "lora_alpha"))
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout is a probability in [0, 1), got {self.lora_dropout}")
        check_seed(self.seed)
        check_seed(self.data_seed, "--data_seed")
        if self.max_steps == 0 or (self.max_steps < 0 and not self.num_train_epochs > 0):
            raise ValueError(
                "--max_steps 0 / --num_train_epochs 0 would save the untouched model as unlearned: give a positive "
                "--max_steps, or leave it at -1 and give a positive --num_train_epochs"
            )


class _StepTimer(TrainerCallback):
    """Appends the wall time of every optimizer step (from its first micro-batch to the end of the step)."""

    def __init__(self, out: list[float]):
        self.out, self.start = out, None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None:
            self.out.append(time.perf_counter() - self.start)
        self.start = None


class UnlearnTrainer(Trainer):
    """``transformers.Trainer`` with paired forget/retain batches, a frozen reference and logged loss terms.

    Args:
        ref_model: the frozen model before unlearning, for methods that need one. Under LoRA pass ``None``: the
            reference is the trained model with its adapters disabled (no second copy in memory).
        selection: a :class:`llm_unlearn.selection.ParameterSelection` applied to every optimizer step.
    """

    paper: str | None = None  # "Title (arXiv id)" for the record and the model card
    forget_sides: tuple[str, ...] = ("forget",)  # the forget-side encodings a batch carries

    @classmethod
    def sides(cls, args) -> tuple[str, ...]:
        return cls.forget_sides

    @classmethod
    def alt_source(cls, args) -> str:
        return "random_other"  # never the evaluation's perturbed answers

    @classmethod
    def supports_text(cls, args) -> bool:
        """Whether the method runs on raw text: it needs nothing but the forget and retain sequences themselves
        (no wrong answers, refusals or QA hybrids)."""
        return cls.sides(args) == ("forget",) and cls.build_dataset.__func__ is UnlearnTrainer.build_dataset.__func__

    @classmethod
    def build_dataset(cls, args, formatter, forget_rows: list[dict], retain_rows: list[dict], model=None, device=None):
        """The paired dataset of this method (methods with their own data, e.g. hybrids, override it); ``model`` and
        ``device`` (the run's, from the one resolver) serve methods whose data depend on the model."""
        from ..data.unlearn_data import standard_dataset

        return standard_dataset(
            formatter,
            forget_rows,
            retain_rows,
            cls.sides(args),
            cls.alt_source(args),
            seed=args.seed,
            forget_split=args.forget_split,
        )

    def __init__(self, *args, ref_model=None, selection=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Our losses are means over sequences of each micro-batch: the Trainer divides them by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self.ref_model = None
        if ref_model is not None:
            ref_model.requires_grad_(False)
            if self.is_deepspeed_enabled:  # a partitioned (ZeRO-3) copy computes only inside an engine of its own
                from ..distributed import prepare_deepspeed_reference

                self.ref_model = prepare_deepspeed_reference(ref_model.eval(), self.accelerator)
            else:
                # Where the policy lives: prepare_model places nothing under FSDP (FSDP does, for the trained model
                # only), so the copy is moved to this rank's device here.
                ref_model = ref_model.eval().to(self.args.device)
                self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self.selection = selection
        if selection is not None and (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            # Masks and restores act on whole parameter tensors; ZeRO/FSDP shard them (not supported yet).
            raise ValueError(
                "parameter selection (--selection hessian, --retention_mask_ratio) runs on one process "
                "or DDP; with DeepSpeed or FSDP use --use_peft true (adapters on the top modules)"
            )
        if selection is not None:
            selection.attach(self.model)
            self.add_callback(selection.callback())
        self._terms: dict[str, list[float]] = defaultdict(list)
        self.step_seconds: list[float] = []  # wall time of each optimizer step (benchmarks skip the warm-up ones)
        self.add_callback(_StepTimer(self.step_seconds))

    # --- data ----------------------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        """The global pair stream, padded to whole optimizer steps; Accelerate shards it between ranks (see
        ``llm_unlearn.data.pairing``), so every launch layout of the same global batch sees the same pairs."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        global_batch = self.get_total_train_batch_size(self.args)  # per-device batch x accumulation x data ranks
        return PairSampler(len(dataset.forget), len(dataset.retain), seed=self.args.seed, global_batch=global_batch)

    # --- forward helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def forward(model, side: dict) -> torch.Tensor:
        return model(input_ids=side["input_ids"], attention_mask=side["attention_mask"]).logits

    @contextlib.contextmanager
    def _reference(self, model):
        """The frozen reference: a separate model, or the trained model with its adapters disabled."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        unwrapped = self.accelerator.unwrap_model(model)
        if not hasattr(unwrapped, "disable_adapter"):
            raise RuntimeError(f"{type(self).__name__} needs a reference model but none was given")
        with unwrapped.disable_adapter():
            yield unwrapped

    @torch.no_grad()
    def reference_logits(self, model, side: dict) -> torch.Tensor:
        with self._reference(model) as ref:
            return self.forward(ref, side)

    def reference_logprobs(self, model, side: dict) -> torch.Tensor:
        return L.sequence_logprobs(self.reference_logits(model, side), side["labels"])[0]

    def retain_loss(self, model, inputs: dict, kind: str = "nll") -> torch.Tensor:
        """GradDiff's retain term: ``nll(retain)``, or ``kl`` to the reference on answer positions only."""
        side = inputs["retain"]
        logits = self.forward(model, side)
        if kind == "kl":
            return L.answer_kl_loss(logits, self.reference_logits(model, side), side["labels"])
        return L.nll_loss(logits, side["labels"])

    def add_retain_term(self, model, inputs: dict, terms: dict, forget_weight: float, kind: str = "nll") -> dict:
        """``loss = forget_weight · forget_loss + α · retain_loss`` (the retain term only when α > 0)."""
        total = forget_weight * terms["forget_loss"]
        if self.args.alpha > 0:
            terms["retain_loss"] = self.retain_loss(model, inputs, kind)
            total = total + self.args.alpha * terms["retain_loss"]
        terms["loss"] = total
        return terms

    # --- the loss ------------------------------------------------------------------------------------------------

    def unlearn_losses(self, model, inputs: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = self.unlearn_losses(model, inputs)
        values = {name: value.detach().float().item() for name, value in terms.items()}
        for name, value in values.items():
            self._terms[name].append(value)
        if not math.isfinite(values["loss"]):
            parts = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "loss")
            raise DivergenceError(f"non-finite loss {values['loss']} at step {self.state.global_step + 1} ({parts})")
        loss = terms["loss"]
        return (loss, None) if return_outputs else loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None and not math.isfinite(float(grad_norm)):
            raise DivergenceError(f"non-finite gradient norm {float(grad_norm)} at step {self.state.global_step + 1}")
        return grad_norm

    # --- the whole run's loss across a resume ------------------------------------------------------------------

    LOSS_SUM = "train_loss_sum"  # a log-history entry of every checkpoint: the loss summed over all steps so far

    def loss_sum_before(self) -> float | None:
        """The loss summed over the steps run before this session: 0 for a fresh run, the resumed checkpoint's entry
        on a resume, ``None`` when that checkpoint does not record it (written by an older llm-unlearn)."""
        start = getattr(self, "_initial_global_step", 0)
        if not start:
            return 0.0
        for h in reversed(self.state.log_history):
            if self.LOSS_SUM in h and h.get("step") == start:
                return float(h[self.LOSS_SUM])
        return None

    def _save_checkpoint(self, model, trial) -> None:
        """Every checkpoint records the loss summed over all steps so far (earlier sessions included), so that a
        resumed run reports the whole run's mean loss, not the mean of its resumed steps."""
        before = self.loss_sum_before()
        if before is not None:
            total = before + self._total_loss_scalar + self._tr_loss.item()
            self.state.log_history.append({"step": self.state.global_step, self.LOSS_SUM: total})
        try:
            super()._save_checkpoint(model, trial)
        finally:
            if before is not None:
                self.state.log_history.pop()

    def whole_run_loss(self, result) -> float:
        """The mean loss per optimizer step over the whole run, across resumes (``result``: ``train()``'s)."""
        start = getattr(self, "_initial_global_step", 0)
        if not start or not self.state.global_step:
            return result.training_loss
        before = self.loss_sum_before()
        if before is None:
            logger.warning(
                "the resumed checkpoint does not record its earlier steps' loss: train_loss covers steps %d-%d only",
                start + 1,
                self.state.global_step,
            )
            return result.training_loss
        return (before + result.training_loss * (self.state.global_step - start)) / self.state.global_step

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._terms and "loss" in logs:
            names = sorted(k for k in self._terms if k != "loss")
            local = torch.tensor([sum(self._terms[k]) / len(self._terms[k]) for k in names], device=self.args.device)
            mean = self.accelerator.reduce(local, reduction="mean") if self.args.world_size > 1 else local
            logs.update({k: round(float(v), 5) for k, v in zip(names, mean.tolist())})
            if self.selection is not None:
                logs["selected_fraction"] = round(self.selection.selected_fraction, 5)
            self._terms.clear()
        super().log(logs, *args, **kwargs)
