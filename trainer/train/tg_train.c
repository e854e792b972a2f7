/* tg-train: the reference trainer. A byte-level language model
 * (trainer/model) trained data-parallel on CPU or on a GPU (--device cuda,
 * trainer/model/cuda), with optimizer state sharded across ranks (ZeRO
 * stage 1), through libtardigrade: it joins the
 * world its agent gives it, snapshots its state into the node's memory
 * after every step, and when the world changes it re-joins and resumes
 * from the newest step of which every shard survives. Data order depends only on the
 * global sample index and gradients are summed exactly, so a run with
 * failures ends with the same parameters, bit for bit, as one without.
 * When the world re-forms at another size (a node lost with no spare, or
 * one returning), each rank rebuilds its optimizer slice from the old
 * world's shards; the global batch stays fixed, each rank taking a larger
 * or smaller share of its chunks.
 *
 * One step, top to bottom:
 *   each rank computes the gradients of its chunks of the global batch and
 *   adds them as fixed-point integers;
 *   all-reduce (int64, exact) -> the mean gradient and loss;
 *   all-reduce of the squared norm (exact limbs) -> gradient clipping;
 *   AdamW on this rank's slice of the parameters;
 *   all-gather of the slices -> every rank holds all parameters;
 *   snapshot, report progress.
 *
 * On a GPU the same step runs on the device (train_gpu.h), and snapshots
 * and restores go through pinned host copies of the same buffers, so a
 * snapshot written on one device restores on the other. The GPU's
 * snapshot of a step is copied while the next step's forward and backward
 * run, and written (tg_snapshot, then tg_step_done) once that compute is
 * enqueued, before the next step's first collective. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config/config.h"
#include "common/clock/clock.h"
#include "trainer/include/tardigrade.h"
#include "trainer/model/adamw.h"
#include "trainer/model/corpus.h"
#include "trainer/model/fixed.h"
#include "trainer/model/model.h"
#include "trainer/model/shard.h"
#include "trainer/model/step.h"
#include "trainer/train/inject.h"
#include "trainer/train/train_gpu.h"


typedef struct {
  int64_t steps, width, depth, context, batch, micro, seed;
  char corpus[512], out[512], device[16], inject_dir[512];
} options;

/* The state of one world: the optimizer slice and the gather buffers.
 * On a GPU the optimizer and the buffers are train_gpu's; m_stage and
 * v_stage then point to its pinned staging. */
typedef struct {
  tg_world world;
  tg_adamw *opt;
  size_t begin, end, slice;  /* this rank's parameters; slice = the largest rank's */
  float *m_stage, *v_stage;  /* snapshot copies of the optimizer slice */
  float *send, *gathered;
  uint64_t step;             /* steps completed */
  int on_gpu;
} world_state;

static void world_free(world_state *w) {
  tg_adamw_free(w->opt);
  if (!w->on_gpu) {
    free(w->m_stage);
    free(w->v_stage);
  }
  free(w->send);
  free(w->gathered);
  memset(w, 0, sizeof *w);
}

/* All-gathers every rank's parameter slice so every rank holds them all. */
static tg_result gather_params(tg_trainer *t, world_state *w, float *params, size_t P) {
  memset(w->send, 0, w->slice * sizeof(float));
  memcpy(w->send, params + w->begin, (w->end - w->begin) * sizeof(float));
  tg_result r = tg_all_gather(t, w->send, w->gathered, w->slice * sizeof(float));
  for (int q = 0; r == TG_OK && q < w->world.world_size; q++) {
    size_t b, e;
    tg_shard_range(P, (uint32_t)w->world.world_size, (uint32_t)q, &b, &e);
    memcpy(params + b, w->gathered + (size_t)q * w->slice, (e - b) * sizeof(float));
  }
  return r;
}

/* Reads the resume point into the snapshot's host buffers: every
 * parameter, this rank's optimizer slice (m_stage, v_stage) and the step.
 * In a world of the size that wrote it, this rank's own shard holds it
 * all; otherwise the slice is cut from the old shards that overlap it
 * (every shard holds all parameters). */
static tg_result read_state(tg_trainer *t, world_state *w, const tg_resume *res, float *params,
                            size_t P, uint64_t *saved_step) {
  if (res->world_size == w->world.world_size) return tg_restore(t, res);
  uint32_t old = (uint32_t)res->world_size;
  tg_shard **shards = calloc(old, sizeof *shards);
  const float **ms = calloc(old, sizeof *ms), **vs = calloc(old, sizeof *vs);
  tg_result r = shards && ms && vs ? TG_OK : TG_ERROR;
  int have_params = 0;
  for (uint32_t q = 0; r == TG_OK && q < old; q++) {
    size_t ob, oe;
    tg_shard_range(P, old, q, &ob, &oe);
    int overlaps = ob < w->end && w->begin < oe;
    if (!overlaps && have_params) continue;
    r = tg_shard_open(t, res, (int)q, &shards[q]);
    if (r != TG_OK) break;
    size_t pb, mb, vb, sb;
    const void *pp = tg_shard_buffer(shards[q], 0, &pb), *mp = tg_shard_buffer(shards[q], 1, &mb),
               *vp = tg_shard_buffer(shards[q], 2, &vb), *sp = tg_shard_buffer(shards[q], 3, &sb);
    if (tg_shard_buffers(shards[q]) != 4 || pb != P * sizeof(float) || mb != (oe - ob) * sizeof(float) ||
        vb != mb || sb != sizeof *saved_step) {
      fprintf(stderr, "tg-train: shard %u of step %" PRIu64 " is not a tg-train snapshot of this model\n", q,
              res->step);
      r = TG_ERROR;
      break;
    }
    if (!have_params) {
      memcpy(params, pp, pb);
      memcpy(saved_step, sp, sizeof *saved_step);
      have_params = 1;
    }
    ms[q] = mp;
    vs[q] = vp;
  }
  if (r == TG_OK && (tg_shard_copy(P, old, ms, w->begin, w->end, w->m_stage) != TG_MODEL_OK ||
                     tg_shard_copy(P, old, vs, w->begin, w->end, w->v_stage) != TG_MODEL_OK))
    r = TG_ERROR;
  for (uint32_t q = 0; shards && q < old; q++)
    if (shards[q]) tg_shard_close(shards[q]);
  free(shards);
  free(ms);
  free(vs);
  return r;
}

/* The CPU optimizer takes its slice from the staging buffers: a world of
 * W shards of which only this rank's overlaps the slice. */
static tg_result load_cpu_optimizer(world_state *w, uint64_t step) {
  uint32_t W = (uint32_t)w->world.world_size;
  const float **ms = calloc(W, sizeof *ms), **vs = calloc(W, sizeof *vs);
  for (uint32_t q = 0; ms && vs && q < W; q++) {
    ms[q] = w->m_stage;
    vs[q] = w->v_stage;
  }
  tg_model_status ls = ms && vs ? tg_adamw_load_shards(w->opt, W, ms, vs, step) : TG_MODEL_ENOMEM;
  free(ms);
  free(vs);
  return ls == TG_MODEL_OK ? TG_OK : TG_ERROR;
}

/* The end of a step: its snapshot into the node's memory, then progress.
 * A snapshot that cannot be written ends the run (-1); one the replica
 * check refused sets *r to TG_WORLD_CHANGED (re-join, roll back);
 * otherwise *r is what tg_step_done said. */
static int commit_step(tg_trainer *t, uint64_t step, float loss, uint32_t step_ms, uint32_t rank,
                       tg_result *r) {
  tg_result snap = tg_snapshot(t, step);
  if (snap == TG_WORLD_CHANGED) {
    *r = snap;
    return 0;
  }
  if (snap != TG_OK) {
    fprintf(stderr, "tg-train: %s\n", tg_last_error(t));
    return -1;
  }
  *r = tg_step_done(t, step, loss, step_ms);
  if (rank == 0) printf("step %" PRIu64 " loss %.4f\n", step, (double)loss);
  return 0;
}

/* The GPU's step whose snapshot is still being copied. */
typedef struct {
  int active;
  uint64_t step;
  float loss;
  uint32_t step_ms;
} pending_snapshot;

/* Waits for the pending copy and commits its step; -1 (said on stderr)
 * ends the run. */
static int commit_pending(tg_trainer *t, train_gpu *gpu, pending_snapshot *p, uint32_t rank,
                          tg_result *r) {
  if (!p->active) return 0;
  p->active = 0;
  if (train_gpu_copy_wait(gpu) != 0) {
    fprintf(stderr, "tg-train: step %" PRIu64 " on the GPU: %s\n", p->step, train_gpu_error(gpu));
    return -1;
  }
  return commit_step(t, p->step, p->loss, p->step_ms, rank, r);
}

int main(int argc, char **argv) {
  options o = {.steps = 50, .width = 32, .depth = 2, .context = 16, .batch = 24, .micro = 4, .seed = 1,
               .device = "cpu"};
  const tg_option opts[] = {
      {"steps", TG_OPT_INT, &o.steps, 0, 1, 100000000, "optimizer steps to train"},
      {"width", TG_OPT_INT, &o.width, 0, 1, 65536, "residual width D"},
      {"depth", TG_OPT_INT, &o.depth, 0, 0, 1024, "residual MLP blocks N"},
      {"context", TG_OPT_INT, &o.context, 0, 1, 65535, "bytes per sample T"},
      {"batch", TG_OPT_INT, &o.batch, 0, 1, 1 << 20, "global batch B (fixed whatever the world size)"},
      {"micro", TG_OPT_INT, &o.micro, 0, 1, 1 << 20, "samples per chunk M (divides B)"},
      {"seed", TG_OPT_INT, &o.seed, 0, 0, INT64_MAX, "initialisation and data seed"},
      {"corpus", TG_OPT_STRING, o.corpus, sizeof o.corpus, 0, 0,
       "text to train on; empty: the GPL text from Debian's base-files, or generated text"},
      {"out", TG_OPT_STRING, o.out, sizeof o.out, 0, 0, "rank 0 writes the final parameters here"},
      {"device", TG_OPT_STRING, o.device, sizeof o.device, 0, 0,
       "cpu, or cuda: the GPU $TG_CUDA_DEVICE, else slot modulo the GPU count (NCCL: its device)"},
      {"inject-dir", TG_OPT_STRING, o.inject_dir, sizeof o.inject_dir, 0, 0,
       "tests only: read fault requests (sdc, nan, straggler) from DIR/<node>.<slot> each step; "
       "empty (default): off"},
  };
  char err[512];
  switch (tg_config_parse(opts, sizeof opts / sizeof opts[0], argc, argv,
                          "usage: tg-train [options]  (started by tg-agent, one per slot)\n\n"
                          "The reference trainer: a byte-level language model trained data-parallel.",
                          NULL, err, sizeof err)) {
  case TG_CONFIG_HELP: return 0;
  case TG_CONFIG_ERROR: fprintf(stderr, "tg-train: %s\n", err); return 2;
  case TG_CONFIG_OK: break;
  }
  int use_gpu = strcmp(o.device, "cuda") == 0;
  if (!use_gpu && strcmp(o.device, "cpu") != 0) {
    fprintf(stderr, "tg-train: --device %s: expected cpu or cuda\n", o.device);
    return 2;
  }
  if (use_gpu && !train_gpu_built(err, sizeof err)) {
    fprintf(stderr, "tg-train: --device cuda: %s\n", err);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  tg_model_config mc = {.context = (uint32_t)o.context, .width = (uint32_t)o.width, .depth = (uint32_t)o.depth,
                        .use_position = 1};
  tg_batch_plan plan = {.global_batch = (uint32_t)o.batch, .micro_batch = (uint32_t)o.micro};
  tg_adamw_config ac = {.lr = 1e-2f, .lr_min = 1e-3f, .warmup_steps = 10, .decay_steps = (uint64_t)o.steps,
                        .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.01f, .grad_clip = 1.0f};
  /* The CPU model, or on a GPU the model's layout alone: its arrays are
   * train_gpu's. */
  tg_model *model = use_gpu ? tg_model_layout_new(&mc, err, sizeof err)
                            : tg_model_new(&mc, plan.micro_batch, err, sizeof err);
  tg_corpus *corpus = model ? tg_corpus_open(o.corpus, mc.context, (uint64_t)o.seed, err, sizeof err) : NULL;
  tg_trainer *t = corpus ? tg_init() : NULL;
  if (!model || !corpus || !t || tg_step_chunk_count(&plan) == 0) {
    fprintf(stderr, "tg-train: %s\n", !model || !corpus ? err : !t ? "no agent" : "--micro must divide --batch");
    return 1;
  }
  train_gpu *gpu = NULL;
  if (use_gpu && !(gpu = train_gpu_new(t, &mc, &plan, &ac, err, sizeof err))) {
    fprintf(stderr, "tg-train: --device cuda: %s\n", err);
    tg_free(t);
    tg_corpus_close(corpus);
    tg_model_free(model);
    return 1;
  }
  if (!use_gpu && tg_device_buffers(t)) {
    fprintf(stderr, "tg-train: --device cpu cannot use NCCL collectives (they take GPU memory): "
                    "use --device cuda, or the gloo backend\n");
    tg_free(t);
    tg_corpus_close(corpus);
    tg_model_free(model);
    return 1;
  }
  if (gpu) printf("tg-train: training on CUDA device %d\n", train_gpu_device(gpu));
  size_t P = tg_model_num_params(model), acc_len = tg_step_acc_len(model);
  float *params = gpu ? train_gpu_host_params(gpu) : tg_model_params(model);
  int64_t *acc = gpu ? NULL : calloc(acc_len, sizeof *acc);
  world_state w = {0};
  pending_snapshot pending = {0};
  tg_inject inject;
  tg_inject_init(&inject, o.inject_dir);
  uint64_t nonfinite_step = 0; /* the step a non-finite loss was last rolled back from */
  int rc = 1;

  for (;;) { /* one iteration per world */
    world_free(&w);
    if (tg_join(t, &w.world, 600000) != TG_OK) {
      fprintf(stderr, "tg-train: %s; joining again\n", tg_last_error(t));
      continue;
    }
    uint32_t W = (uint32_t)w.world.world_size, R = (uint32_t)w.world.rank;
    tg_shard_range(P, W, R, &w.begin, &w.end);
    w.slice = (P + W - 1) / W;
    if (gpu) {
      w.on_gpu = 1;
      if (train_gpu_world(gpu, W, R, &w.m_stage, &w.v_stage) != 0) {
        fprintf(stderr, "tg-train: %s\n", train_gpu_error(gpu));
        break;
      }
    } else {
      w.opt = tg_step_optimizer_new(model, &ac, W, R, err, sizeof err);
      w.m_stage = calloc(w.end - w.begin + 1, sizeof(float));
      w.v_stage = calloc(w.end - w.begin + 1, sizeof(float));
      w.send = calloc(w.slice, sizeof(float));
      w.gathered = calloc((size_t)W * w.slice, sizeof(float));
      if (!w.opt || !w.m_stage || !w.v_stage || !w.send || !w.gathered) {
        fprintf(stderr, "tg-train: %s\n", w.opt ? "out of memory" : err);
        break;
      }
    }
    /* What a snapshot holds: every parameter, this rank's optimizer
     * slice (through staging copies) and the step. Registered per world:
     * the slices depend on the world's size. */
    static uint64_t saved_step;
    size_t own = w.end - w.begin;
    tg_register_replica(t, "params", params, P * sizeof(float));
    tg_register(t, "adamw.m", w.m_stage, own * sizeof(float));
    tg_register(t, "adamw.v", w.v_stage, own * sizeof(float));
    tg_register(t, "step", &saved_step, sizeof saved_step);
    tg_resume res;
    if (tg_resume_step(t, &res) != TG_OK) {
      fprintf(stderr, "tg-train: %s; joining again\n", tg_last_error(t));
      continue;
    }
    uint64_t resume = res.step;
    if (resume > 0) {
      tg_result lr = read_state(t, &w, &res, params, P, &saved_step);
      if (lr == TG_WORLD_CHANGED) continue;
      if (lr == TG_OK && gpu && train_gpu_load(gpu, saved_step) != 0) {
        fprintf(stderr, "tg-train: %s\n", train_gpu_error(gpu));
        break;
      }
      if (lr == TG_OK && !gpu) lr = load_cpu_optimizer(&w, saved_step);
      if (lr != TG_OK) {
        fprintf(stderr, "tg-train: cannot restore step %" PRIu64 ": %s\n", resume, tg_last_error(t));
        break;
      }
    } else {
      if (gpu && train_gpu_init(gpu, (uint64_t)o.seed) != 0) {
        fprintf(stderr, "tg-train: %s\n", train_gpu_error(gpu));
        break;
      }
      if (!gpu) tg_model_init_params(model, (uint64_t)o.seed);
      saved_step = 0;
    }
    w.step = resume;
    printf("rank %u of %u (generation %" PRIu64 "): %s at step %" PRIu64 "%s%s\n", R, W, w.world.generation,
           resume ? "resuming" : "starting", resume,
           !resume || res.world_size == (int)W ? "" : " (optimizer state resharded from a world of another size)",
           resume && res.from_disk ? " (from the persisted checkpoint)" : "");

    tg_result r = TG_OK;
    while (r == TG_OK && w.step < (uint64_t)o.steps) {
      int64_t t0 = tg_clock_mono_ms();
      tg_inject_poll(&inject);
      tg_inject_straggle(&inject);
      uint32_t chunks = tg_step_chunk_count(&plan);
      size_t cb, ce;
      tg_shard_range(chunks, W, R, &cb, &ce);
      float loss = 0;
      if (gpu) {
        /* The GPU computes this step while the previous one's snapshot
         * is committed; then the collectives, update and gather. */
        if (train_gpu_compute(gpu, corpus, w.step, (uint32_t)cb, (uint32_t)ce) != 0) goto gpu_failed;
        if (commit_pending(t, gpu, &pending, R, &r) != 0) goto done;
        if (r != TG_OK) break;
        if (train_gpu_update(gpu, t, &r, &loss) != 0) goto gpu_failed;
        if (r != TG_OK) break;
        w.step++;
        saved_step = w.step;
        if (train_gpu_copy_out(gpu) != 0) goto gpu_failed;
        pending = (pending_snapshot){1, w.step, loss, (uint32_t)(tg_clock_mono_ms() - t0)};
        continue;
      }
      memset(acc, 0, acc_len * sizeof *acc);
      tg_model_status acc_st = tg_step_accumulate(model, corpus, &plan, w.step, (uint32_t)cb, (uint32_t)ce, acc);
      if (inject.nan) { /* as a NaN in this rank's loss comes out of the fixed-point sums */
        inject.nan = 0;
        acc_st = TG_MODEL_ENONFINITE;
      }
      if (acc_st == TG_MODEL_ENONFINITE && nonfinite_step != w.step + 1) {
        /* Roll back once (a flipped bit, a bad input on one rank); the
         * same step diverging again after that is the model's own. */
        nonfinite_step = w.step + 1;
        r = tg_report_nonfinite(t, w.step + 1, "loss or gradient");
        break;
      }
      if (acc_st != TG_MODEL_OK) {
        fprintf(stderr, "tg-train: the loss diverged at step %" PRIu64 "\n", w.step);
        goto done;
      }
      int64_t limbs[TG_FIXED_SQNORM_LIMBS] = {0};
      r = tg_all_reduce(t, acc, acc_len, TG_INT64);
      if (r == TG_OK && tg_step_mean(model, &plan, acc, &loss) != TG_MODEL_OK) goto done;
      if (r == TG_OK && tg_fixed_sqnorm(tg_model_grads(model), w.begin, w.end, limbs) != TG_MODEL_OK) goto done;
      if (r == TG_OK) r = tg_all_reduce(t, limbs, TG_FIXED_SQNORM_LIMBS, TG_INT64);
      if (r != TG_OK) break;
      tg_adamw_update(w.opt, params, tg_model_grads(model), tg_fixed_sqnorm_to_norm(limbs));
      r = gather_params(t, &w, params, P);
      if (r != TG_OK) break;
      if (W > 1) { /* outside this rank's slice, so only its replica differs */
        size_t ob, oe;
        tg_shard_range(P, W, (R + 1) % W, &ob, &oe);
        tg_inject_sdc(&inject, params, ob);
      }
      w.step++;
      saved_step = w.step;
      memcpy(w.m_stage, tg_adamw_m(w.opt), own * sizeof(float));
      memcpy(w.v_stage, tg_adamw_v(w.opt), own * sizeof(float));
      if (commit_step(t, w.step, loss, (uint32_t)(tg_clock_mono_ms() - t0), R, &r) != 0) goto done;
    }
    /* The GPU's last step, whose snapshot is still being copied (none
     * after a collective failed: the step before it was committed). */
    if (commit_pending(t, gpu, &pending, R, &r) != 0) goto done;
    if (w.step >= (uint64_t)o.steps) break;
    fprintf(stderr, "tg-train: world changed at step %" PRIu64 " (%s); re-joining\n", w.step, tg_last_error(t));
  }
  if (w.world.rank == 0 && o.out[0]) {
    FILE *f = fopen(o.out, "wb");
    if (!f || fwrite(params, sizeof(float), P, f) != P) {
      fprintf(stderr, "tg-train: cannot write %s\n", o.out);
      if (f) fclose(f);
      goto done;
    }
    fclose(f);
  }
  printf("rank %d done after %" PRIu64 " steps\n", w.world.rank, w.step);
  rc = 0;
  goto done;
gpu_failed:
  fprintf(stderr, "tg-train: step %" PRIu64 " on the GPU: %s\n", w.step, train_gpu_error(gpu));
done:
  world_free(&w);
  free(acc);
  train_gpu_free(gpu);
  tg_free(t);
  tg_corpus_close(corpus);
  tg_model_free(model);
  return rc;
}
