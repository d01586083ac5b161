"""All configuration in one place.

One settings object for the CLI, the service and the worker processes:
:class:`Settings` holds the options every model shares (service, queue,
storage, the engine's device and limits), and one *section* per model: each
model folder defines a small :class:`ModelSettings` subclass (its weights, its
architecture file, its engine knobs), and :class:`Settings` builds one of each
from the app registry (``settings.models[name]``, or ``settings.section(app)``)
without naming any.

Every option is read from an environment variable ``CCSR_<NAME>`` and has one
*flat name*: a shared option its field name, a section's field the name its
environment variable spells (``CCSR_WEIGHTS`` -> ``weights``,
``CCSR_ESRGAN_WEIGHTS_DIR`` -> ``esrgan_weights_dir``). ``Settings(weights=...)``
and the flag ``--weights`` use that flat name too. The README's settings tables
list every option (``scripts/settings_table.py`` prints them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated, Literal

from ccsr.jobs.config import MAX_LEASE_SECONDS

#: Prefix of every environment variable (a section's own prefix starts with it).
ENV_PREFIX = "CCSR_"
#: The shared settings a model's worker process gets besides its section.
ENGINE_FIELDS = ("device", "dtype", "max_output_pixels", "batch_size", "tune_malloc", "winograd", "fused_upsample",
                 "onednn_linear")


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "ccsr"


#: Options Ray gets for every actor unless ``ray_actor_options`` says otherwise.
DEFAULT_ACTOR_OPTIONS: dict = {"num_gpus": 1}
#: Actor options a user may set; restarts and retries belong to the scheduler.
ALLOWED_ACTOR_OPTIONS = frozenset(
    {"num_gpus", "num_cpus", "memory", "resources", "accelerator_type", "runtime_env", "label_selector"}
)


def check_actor_options(options: dict) -> dict:
    """Validate ``ray_actor_options`` (a pure check: ``ray`` is not imported);
    return them merged over the defaults. Raises ValueError naming the option
    and what is allowed; the Ray executor merges with it too."""
    if not isinstance(options, dict):
        raise ValueError("ray_actor_options: must be a JSON object")
    bad = sorted(set(options) - ALLOWED_ACTOR_OPTIONS)
    if bad:
        raise ValueError(
            f"ray_actor_options: unsupported key(s) {', '.join(bad)}; allowed: {', '.join(sorted(ALLOWED_ACTOR_OPTIONS))}"
            " (restarts and retries are fixed at 0: the scheduler owns retries)"
        )
    for key in ("num_gpus", "num_cpus", "memory"):
        value = options.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"ray_actor_options: {key} must be a number >= 0, got {value!r}")
    res = options.get("resources", {})
    if not isinstance(res, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in res.values()
    ):
        raise ValueError("ray_actor_options: resources must map names to amounts > 0")
    return {**DEFAULT_ACTOR_OPTIONS, **options}


class ModelSettings(BaseSettings):
    """One model's settings section. A model folder subclasses it (``settings.py``),
    sets ``env_prefix`` (``CCSR_`` plus, for a new model, its own name, e.g.
    ``CCSR_V2_``) and documents every field; the app names the class as
    ``App.Settings``. A field with ``json_schema_extra={"cli": {...}}`` is also a
    flag of ``ccsr serve`` and ``ccsr upscale`` (the dict: extra typer.Option
    arguments such as ``exists=True``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    # --- this model's Ray actors (executor=ray; docs/scale-out.md) -----------
    # Every model has them: several apps share one cluster, each sized apart
    # (ccsr.executors.ray_plan).
    ray_actors: Optional[int] = Field(None, ge=1, description="Ray actors of this model with executor=ray; default: ray_workers if set, else this model's share of the cluster (the served models split its GPUs, or the custom resources their actors ask for, evenly, at least one actor each; growing when nodes join).")
    ray_num_gpus: Optional[float] = Field(None, ge=0, description="GPUs each Ray actor of this model holds, over num_gpus of ray_actor_options (default 1); a fraction lets actors of several models share a GPU, e.g. 0.1 for Real-ESRGAN beside CCSR at 0.9.")
    ray_resources: dict[str, float] = Field(default_factory=dict, description='Custom Ray resources each actor of this model holds, as JSON, added to those of ray_actor_options, e.g. {"esrgan_gpu": 1} to keep this model on the nodes started with that resource.')

    #: Fields the server reads to place this model's actors; a worker never gets them.
    PLACEMENT_FIELDS: ClassVar[tuple[str, ...]] = ("ray_actors", "ray_num_gpus", "ray_resources")

    @field_validator("ray_resources")
    @classmethod
    def _check_ray_resources(cls, v: dict) -> dict:
        bad = [k for k, amount in v.items() if k in ("CPU", "GPU", "memory") or amount <= 0]
        if bad:
            raise ValueError(f"{bad[0]}: custom resource amounts must be > 0 (GPUs: ray_num_gpus; CPUs: ray_actor_options)")
        return v

    @classmethod
    def flat_name(cls, field: str) -> str:
        """The field's flat name: its environment variable without ``CCSR_``, lower case."""
        prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
        if not prefix.upper().startswith(ENV_PREFIX):
            raise ValueError(f"{cls.__name__}: env_prefix must start with {ENV_PREFIX}, got {prefix!r}")
        return (prefix + field)[len(ENV_PREFIX):].lower()

    @classmethod
    def cli_fields(cls) -> dict[str, dict]:
        """Fields that are also command-line flags, with their extra typer.Option arguments."""
        out = {}
        for name, f in cls.model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if "cli" in extra:
                out[name] = dict(extra["cli"] or {})  # type: ignore[arg-type]
        return out


def model_sections() -> dict[str, type[ModelSettings]]:
    """Each built-in model's section class, by model name, in registry order."""
    from ccsr.apps.registry import builtin_classes

    return {cls.name: cls.Settings for cls in builtin_classes()}


class Settings(BaseSettings):
    """Settings for the engine, the CLI and ``ccsr serve``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    def __init__(self, **values: Any) -> None:
        """Build every model's section (from the environment, ``models={name:
        {field: value}}`` and flat names such as ``weights=``), then the shared
        options. A section's error names the flat name (``compile: ...``)."""
        values["models"] = _build_sections(values)
        super().__init__(**values)

    # --- engine (every model's worker) ------------------------------------
    # Settings of one model only live in its section (ModelSettings, see below).
    device: str = Field("auto", description="cpu, cuda, cuda:N, mps or auto (CUDA, then MPS, then CPU).")
    dtype: str = Field("auto", description="fp32, fp16, bf16 or auto (fp16 on CUDA/MPS, fp32 on CPU).")
    max_output_pixels: int = Field(4096 * 4096, ge=1, description="Largest output (width*height) a request may ask for.")
    tune_malloc: bool = Field(True, description="On a CPU (Linux, glibc), keep freed activation buffers in the model process for the next network call instead of returning them to the kernel: a full-size CPU request 0.82x the time, peak memory about 7% higher (see src/ccsr/engine/allocator.py). Off: glibc's defaults.")
    huge_pages: bool = Field(True, description="On Linux with transparent huge pages on (always or madvise), back CPU tensors of 2 MiB or more with huge pages (PyTorch's THP_MEM_ALLOC_ENABLE, set when the ccsr package is imported, before torch; worker processes inherit it): a full-size CCSR-v2 one-step request on a 2-core VM took 0.35-0.38x the page faults, 0.6-0.9x the system time and 0.94-0.98x the wall time in two A/B runs (benchmarks/bench_process.py, src/ccsr/engine/allocator.py). Read from the environment at import only (CCSR_HUGE_PAGES=0 turns it off); THP_MEM_ALLOC_ENABLE set by hand wins.")
    winograd: bool = Field(True, description="In fp32 on a CPU, run the CCSR models' 3x3 convolutions on feature maps of 64 px or more through NNPACK's Winograd kernels (shipped with PyTorch) instead of direct convolutions; maps over 64 MiB go in stripes, so NNPACK's retained workspace stays about 220 MB. On a 2-core AVX-512 Xeon a whole CCSR-v2 request took 0.87-0.92x the time as a separate process (one- and two-step, 256 -> 512), for 0.1-0.35 GiB more peak memory. The result differs by rounding only (about 1e-5 relative per layer; both models' goldens pass with it). Off: PyTorch's direct convolutions. Needs AVX2 and FMA (or NEON); elsewhere, on a GPU and in bf16 nothing changes (src/ccsr/engine/winograd.py, benchmarks/bench_v2.py --also-direct).")
    fused_upsample: Literal["auto", "on", "off"] = Field("auto", description="In fp32 on a CPU, run the CCSR models' nearest-2x-upsample-then-3x3-convolution pairs (the VAE decoder's three, the UNet's) as four 2x2 convolutions of the smaller map: 16 multiplications per four outputs instead of 36, the same result up to rounding (about 4e-7 relative). auto: every size on Intel and other CPUs (on a 2-core Xeon 0.56-0.83x the time of upsampling plus the Winograd convolution); on AMD only outputs under 64 px, since on a 2-core EPYC (Zen 4) the Winograd convolution was faster from 64 px up (0.71-0.79x the phases' time on the VAE's upsamplers, 0.88x on the UNet's largest; benchmarks/results/upsample-cpu-amd.json). on: every size; off: never (src/ccsr/engine/upsample.py, src/ccsr/engine/cpu_kernels.py, benchmarks/bench_upsample.py).")
    onednn_linear: Literal["auto", "on", "off"] = Field("auto", description="In fp32 on a CPU, run the CCSR models' linear layers (attention projections, feed-forwards, the text encoder) through oneDNN's matrix multiplication (shipped with PyTorch) instead of MKL's: on a 2-core AMD EPYC (Zen 4) 0.86x the time over a guided request pass's shapes, 0.73x on the text encoder's (benchmarks/bench_linear.py, results/linear-cpu-amd.json); the same result up to rounding. auto: on AMD only (not measured faster on Intel); on: every CPU; off: never (src/ccsr/engine/linear.py).")
    batch_size: int = Field(1, ge=1, le=64, description="Requests an idle model worker takes from the queue at once; those of one input size and parameters (seeds may differ) go through the network together, the others run one after another (a request shows IN_PROGRESS from when its worker takes it). Raise it on a GPU for throughput (benchmarks/bench_batching.py); 1 runs one request at a time. Also the most requests CCSRUpscaler.run_batch batches (Python API). Local worker pool only: a Ray actor runs one request at a time.")
    batch_wait: float = Field(0.5, ge=0, le=10, description="Seconds a worker gathering a batch waits for requests still being fetched and checked before it starts with what it has (it starts at once when the batch is full or nothing more is in preparation).")
    models: dict[str, Any] = Field(default_factory=dict, description="Each model's own settings section, by model name (built from the registry; see ModelSettings).")

    # --- service --------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `ccsr serve` binds to.")
    port: int = Field(8000, description="Port `ccsr serve` listens on.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the job database, files and webhook keys live.")
    database_url: Optional[str] = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/ccsr.db. postgresql://... for PostgreSQL.")
    public_url: Optional[str] = Field(None, description="Base URL clients reach the server at (for result and upload URLs); default: from the request's Host.")
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Accepted API keys (env: comma-separated).")
    api_keys_file: Optional[Path] = Field(None, description="File with one API key per line (# comments allowed).")
    public_ops_routes: bool = Field(False, description="With API keys configured, let /metrics, /docs, /redoc and the worker details of /readyz answer without a key.")
    workers: Optional[str] = Field(None, description="Comma-separated devices to run one model worker on each (default: the device setting).")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a complete request head (after connecting, or after its previous response); then the connection is closed.")
    keep_alive_timeout: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection is kept open.")
    max_connections: int = Field(1000, ge=16, description="Open client connections; above it the oldest connection still waiting for its request head is closed (kept below the open-file limit).")
    max_header_bytes: int = Field(16384, ge=4096, description="Largest request head (request line and headers); above: 400 and the connection closed.")
    log_repeat_limit: int = Field(10, ge=1, description="Identical log messages written per log_repeat_window; the rest are counted and dropped.")
    log_repeat_window: float = Field(60.0, gt=0, description="Seconds of the window log_repeat_limit counts in.")
    allow_private_urls: bool = Field(False, description="Let image_url and webhook URLs reach loopback/private/link-local addresses.")
    max_download_bytes: int = Field(50 * 1024 * 1024, description="Largest image_url download.")
    download_timeout: float = Field(30.0, description="Seconds allowed for one image_url download.")
    max_redirects: int = Field(5, description="Redirects followed when fetching image_url.")
    max_data_uri_bytes: int = Field(20 * 1024 * 1024, description="Largest data: URI in a request body (encoded length).")
    max_request_body_bytes: int = Field(22 * 1024 * 1024, ge=1024, description="Largest request body on any route but the raw upload routes (those have max_upload_bytes); above: 413. A little above max_data_uri_bytes, so a data URI at its limit still fits.")
    max_sync_mode_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest result returned inline (sync_mode=true), as the length of its data URI (4/3 of the file, plus its header); a larger result fails the request with 422 on sync_mode (ask for a file URL, or for jpeg).")
    provenance: bool = Field(True, description="Write what made each PNG result (app, model, package version, parameters with the seed used) into its tEXt chunk 'ccsr', so any picture can be reproduced; false keeps results free of it (privacy).")
    max_input_pixels: int = Field(40_000_000, description="Largest decoded input image (width*height); larger is refused before decoding.")
    decode_memory_bytes: int = Field(2 * 1024 ** 3, ge=64 * 1024 ** 2, description="Address space of the child process that decodes an input image (RLIMIT_AS); an image needing more fails with 422.")
    decode_timeout: float = Field(60.0, gt=0, description="Seconds (wall and CPU) allowed to decode one input image.")
    max_upload_bytes: int = Field(200 * 1024 * 1024, description="Largest file accepted by the upload routes.")
    result_ttl: float = Field(7 * 24 * 3600, description="Seconds results and their files are kept (a request may ask for less or more with x-fal-object-lifecycle-preference).")
    max_expiration_seconds: float = Field(30 * 24 * 3600, gt=0, allow_inf_nan=False, description="Longest lifetime a request may ask for with x-fal-object-lifecycle-preference (longer, infinite or negative: 422).")
    finished_cache_bytes: int = Field(64 * 2**20, ge=2**20, description="Memory the in-process cache of finished requests may use (about; besides its 20,000-request cap), so status and result polls of recent requests are answered without the database. A finished request's log lines are never kept in it (a status poll with logs after the end reads them from the database).")
    idempotency_ttl: float = Field(24 * 3600, gt=0, description="Seconds an Idempotency-Key on submit is remembered (same key and body: the first request is returned).")
    idempotency_pending_timeout: float = Field(30.0, ge=1, le=3600, description="Seconds an Idempotency-Key whose submit has not finished stays reserved without a sign of life from its server (renewed while the submit runs); a key left by a submit whose server was killed is reusable after this.")
    max_attempts: int = Field(2, description="Runs a request gets when its worker crashes (1 retry). A run cut short by a server kill or restart is not counted here (see max_interruptions).")
    max_interruptions: int = Field(3, ge=1, description="Runs of one request a server kill or restart may cut short before the request is failed (so a request that keeps killing its server ends); not counted as failed attempts.")
    log_flush_interval: float = Field(0.5, ge=0.05, le=0.5, description="Seconds between writes of buffered log lines and progress to the database (a kill -9 loses at most this much; other servers see logs at this cadence).")
    webhook_max_attempts: int = Field(10, description="Webhook deliveries tried before giving up.")
    webhook_timeout: float = Field(15.0, gt=0, le=600, description="Seconds a webhook receiver has to answer one delivery (connect, send, response); a slower answer counts as failed and the delivery is tried again later (the receiver may then see it twice: deduplicate on the x-fal-webhook-delivery-id header). Raise it for receivers that do their work before answering.")
    webhook_concurrency: int = Field(32, ge=1, description="Webhook sends in flight at once (all receivers together).")
    webhook_per_host_concurrency: int = Field(4, ge=1, description="Webhook sends in flight at once to one receiver host, so a receiver that hangs cannot delay the others.")
    blob_threads: int = Field(16, ge=1, le=256, description="Threads of the HTTP process for blob-store calls (inputs, results, uploads, files), a pool apart from the database's (db_threads): a stalled store holds up only the routes that need its bytes.")
    db_threads: int = Field(16, ge=1, le=256, description="Threads of the HTTP process for database calls and other short blocking work (the event loop's default pool; blob-store calls have their own, blob_threads).")

    # --- scale-out (docs/scale-out.md) ----------------------------------------
    node_id: Optional[str] = Field(None, description="Name of this server among several on one database (the claimed_by of the jobs it runs); default: host-pid-random, unique per process.")
    lease_seconds: float = Field(10.0, gt=0, le=MAX_LEASE_SECONDS, description="How long a server's claim on a running job holds without a heartbeat, on the database's clock; a job whose lease passed (its server died) is queued again by another server. At least 3 x heartbeat_interval, at most 60 (a dead server's jobs never wait longer).")
    heartbeat_interval: float = Field(2.0, gt=0, description="Seconds between a server's lease renewals of the jobs it runs (also when it sees cancels sent to other servers, and re-queues jobs of dead servers).")
    poll_interval: float = Field(0.5, gt=0, description="Seconds between looks at the shared database for jobs submitted to other servers and for changes of requests running elsewhere (jobs submitted here start at once).")
    apps: Optional[str] = Field(None, description="Comma-separated app ids this server serves (e.g. fal-ai/ccsr); default: every built-in app (fal-ai/ccsr, fal-ai/esrgan). A GPU box that only upscales with CCSR starts no ESRGAN workers.")
    executor: Literal["local", "ray"] = Field("local", description="Where the model runs: local (worker processes on this machine) or ray (one Ray actor per GPU of a Ray cluster; needs ccsr[ray]).")
    ray_address: Optional[str] = Field(None, description="Ray cluster to join with executor=ray: auto (the cluster this machine belongs to) or host:6379 (the head's GCS address); default: start a private single-machine Ray. See docs/scale-out.md.")
    ray_workers: Optional[int] = Field(None, ge=1, description="Ray actors of each served model that sets no ray_actors of its own (executor=ray); default: the served models split the cluster (its GPUs, or the custom resources their actors ask for) evenly, at least one actor each, growing when nodes join.")
    ray_actor_options: dict = Field(default_factory=dict, description='Ray actor options of every model as JSON, merged over {"num_gpus": 1}; e.g. {"num_gpus":0,"num_cpus":1,"resources":{"ccsr_worker":1}} for CPU nodes. A model\'s ray_num_gpus and ray_resources go over it.')

    @model_validator(mode="after")
    def _check_lease(self) -> "Settings":
        if self.lease_seconds < 3 * self.heartbeat_interval:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must be at least 3 x heartbeat_interval "
                f"({self.heartbeat_interval}): a lease that passes between two heartbeats re-queues running jobs"
            )
        return self

    @field_validator("ray_address")
    @classmethod
    def _check_ray_address(cls, v: Optional[str]) -> Optional[str]:
        # Ray Client (ray://) needs ray[client] and proxies every object through
        # the head; the executor is built and tested as a cluster member.
        if v is not None and v.strip().lower().startswith("ray://"):
            raise ValueError(
                "ray:// (Ray Client) is not supported: run ccsr serve on a machine that can reach every node "
                "and give the head's GCS address (host:6379) or auto"
            )
        return v

    @field_validator("ray_actor_options")
    @classmethod
    def _check_actor_options(cls, v: dict) -> dict:
        # Here, not in the executor: a bad key fails at start-up with the
        # field's name, not at the first request.
        check_actor_options(v)
        return v
    # --- blob store (inputs, results, uploads) ----------------------------
    blob_store: Literal["local", "s3"] = Field("local", description="Where inputs, results and uploaded files live: local (a directory under data_dir/blobs) or s3 (an S3-compatible bucket, shared by several nodes and remote workers; needs `pip install 'ccsr[s3]'`).")
    s3_endpoint_url: Optional[str] = Field(None, description="S3 API endpoint, e.g. http://127.0.0.1:8333 for SeaweedFS or MinIO; default: AWS S3 for the region.")
    s3_bucket: Optional[str] = Field(None, description="Bucket holding the blobs (required when blob_store is s3).")
    s3_region: Optional[str] = Field(None, description="Region of the bucket; default: boto3's (AWS_DEFAULT_REGION, ~/.aws/config).")
    s3_access_key_id: Optional[str] = Field(None, description="Access key id; default: boto3's credential chain (AWS_ACCESS_KEY_ID, ~/.aws, instance role).")
    s3_secret_access_key: Optional[SecretStr] = Field(None, description="Secret access key paired with s3_access_key_id (never logged).")
    s3_prefix: str = Field("", description="Key prefix inside the bucket, e.g. ccsr/ to share a bucket with other data.")
    s3_presign_urls: bool = Field(False, description="Answer file URLs with a redirect to a presigned GET URL on the bucket (clients download from S3 directly) instead of streaming through the server.")
    s3_presign_expires: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Seconds a presigned URL stays valid.")
    s3_connect_timeout: float = Field(3.0, gt=0, le=300, description="Seconds to open a connection to the S3 endpoint before that try of a call fails.")
    s3_read_timeout: float = Field(15.0, gt=0, le=600, description="Seconds S3 may take to answer one request (each read of the answer) before that try of a call fails: a stalled store costs this, not boto's 60 s.")
    s3_retry_seconds: float = Field(10.0, ge=0, le=600, description="How long one storage call keeps retrying a store that does not answer (backoff from 0.1 s doubling to 2 s). Then it fails as unavailable: a job goes back to the queue (not failed), a submit that must store its input answers 503 with Retry-After, and the server is not ready and claims no work until the store answers (docs/scale-out.md).")
    store_check_interval: float = Field(2.0, gt=0, le=300, description="Seconds between checks of the blob store (one HEAD request): a server whose store stopped answering is not ready and claims no work until a check passes; a submit refused meanwhile is told to retry after twice this.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v):  # noqa: ANN001
        # The env var is comma-separated; flags and code pass lists.
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    def section(self, app: Any) -> ModelSettings:
        """The settings section of ``app``'s model (an app outside the built-in
        registry, e.g. a test's, gets its section from the environment)."""
        got = self.models.get(app.name)
        if isinstance(got, app.Settings):
            return got
        return app.Settings(**(got or {}))

    def engine_settings(self) -> dict[str, Any]:
        """The shared options every model's worker reads (:data:`ENGINE_FIELDS`), as plain values."""
        return {name: getattr(self, name) for name in ENGINE_FIELDS}

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ccsr.db'}"

    def all_api_keys(self) -> list[str]:
        """Keys from the setting, the env var and the keys file, deduplicated."""
        keys = [k.strip() for item in self.api_keys for k in item.split(",") if k.strip()]
        if self.api_keys_file and self.api_keys_file.exists():
            for line in self.api_keys_file.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        return list(dict.fromkeys(keys))


def _build_sections(values: dict[str, Any]) -> dict[str, Any]:
    """Each built-in model's section from ``values`` (its flat names are taken
    out of ``values``; ``values["models"]`` may hold sections or dicts by model
    name) and the environment. Errors are re-raised naming the flat name."""
    sections = model_sections()
    given: dict[str, Any] = dict(values.pop("models", None) or {})
    flat = {cls.flat_name(f): (name, f) for name, cls in sections.items() for f in cls.model_fields}
    for key in [k for k in values if k in flat]:
        name, f = flat[key]
        if not isinstance(given.get(name), ModelSettings):
            given[name] = {**(given.get(name) or {}), f: values.pop(key)}
    errors: list[InitErrorDetails] = []
    for name, cls in sections.items():
        value = given.get(name)
        if isinstance(value, cls):
            continue
        try:
            given[name] = cls(**(value or {}))
        except ValidationError as exc:
            for e in exc.errors():
                loc = (cls.flat_name(str(e["loc"][0])), *e["loc"][1:]) if e["loc"] else (name,)
                errors.append(InitErrorDetails(type=e["type"], loc=loc, input=e["input"], ctx=e.get("ctx", {})))
    if errors:
        raise ValidationError.from_exception_data("Settings", errors)
    return given


@dataclasses.dataclass(frozen=True)
class SettingDoc:
    """One documented option: its flat name, environment variable, field and
    owner (a model name, or None for a shared option)."""

    name: str
    env: str
    field: FieldInfo
    model: Optional[str]


def documented() -> list[SettingDoc]:
    """Every option, shared ones first, then each model's section in registry
    order (the README's tables, the docs tests)."""
    docs = [SettingDoc(n, ENV_PREFIX + n.upper(), f, None) for n, f in Settings.model_fields.items() if n != "models"]
    for model, cls in model_sections().items():
        docs += [SettingDoc(cls.flat_name(n), ENV_PREFIX + cls.flat_name(n).upper(), f, model)
                 for n, f in cls.model_fields.items()]
    return docs

