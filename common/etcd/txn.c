/* Transactions: the one etcd verb that makes Tardigrade's fencing safe.
 *
 * Generations are allocated, leaders elected and members registered with
 * compare-then-act transactions, so the builder here keeps that readable:
 * add compares (value, version, create or mod revision with = != < >), add
 * THEN and ELSE ops (put, delete, get), commit. A comparison that fails is
 * an answer (succeeded == 0), never an error.
 *
 * The builder owns copies of every key and value and stores them directly
 * in the protobuf request it will send; a builder error (bad argument, no
 * memory) sticks and is reported by commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/etcd/etcd_internal.h"

#define TXN_MAX_OPS 128 /* etcd's default --max-txn-ops */

struct tg_etcd_txn {
  Etcdserverpb__TxnRequest req;
  Etcdserverpb__Compare *compares[TXN_MAX_OPS];
  Etcdserverpb__RequestOp *ops[2][TXN_MAX_OPS];
  int failed; /* a builder call failed */
  char why[128];
};

static uint8_t *copy_bytes(const void *p, size_t len) {
  uint8_t *d = malloc(len ? len : 1);
  if (d && len) memcpy(d, p, len);
  return d;
}

/* Copies `key` (with prefix/range end) into owned memory. */
static int own_range(ProtobufCBinaryData *k, ProtobufCBinaryData *e, const char *key, int prefix,
                     const char *range_end) {
  uint8_t *end_storage = NULL;
  if (etcd_set_range(k, e, key, prefix, range_end, &end_storage) != 0) return -1;
  uint8_t *kd = copy_bytes(k->data, k->len);
  uint8_t *ed = e->len ? copy_bytes(e->data, e->len) : NULL;
  free(end_storage);
  if (!kd || (e->len && !ed)) {
    free(kd);
    free(ed);
    k->data = e->data = NULL;
    k->len = e->len = 0;
    return -1;
  }
  k->data = kd;
  e->data = ed;
  return 0;
}

static int fail(tg_etcd_txn *t, const char *why) {
  if (t && !t->failed) {
    t->failed = 1;
    snprintf(t->why, sizeof t->why, "%s", why);
  }
  return -1;
}

tg_etcd_txn *tg_etcd_txn_new(void) {
  tg_etcd_txn *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  etcdserverpb__txn_request__init(&t->req);
  t->req.compare = t->compares;
  t->req.success = t->ops[TG_ETCD_THEN];
  t->req.failure = t->ops[TG_ETCD_ELSE];
  return t;
}

static void free_range_req(Etcdserverpb__RangeRequest *r) {
  if (!r) return;
  free(r->key.data);
  free(r->range_end.data);
  free(r);
}

static void free_op(Etcdserverpb__RequestOp *op) {
  switch (op->request_case) {
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
      free_range_req(op->request_range);
      break;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
      if (op->request_put) {
        free(op->request_put->key.data);
        free(op->request_put->value.data);
        free(op->request_put);
      }
      break;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
      if (op->request_delete_range) {
        free(op->request_delete_range->key.data);
        free(op->request_delete_range->range_end.data);
        free(op->request_delete_range);
      }
      break;
    default:
      break;
  }
  free(op);
}

void tg_etcd_txn_free(tg_etcd_txn *t) {
  if (!t) return;
  for (size_t i = 0; i < t->req.n_compare; i++) {
    Etcdserverpb__Compare *cmp = t->compares[i];
    free(cmp->key.data);
    if (cmp->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE) free(cmp->value.data);
    free(cmp);
  }
  for (size_t i = 0; i < t->req.n_success; i++) free_op(t->ops[TG_ETCD_THEN][i]);
  for (size_t i = 0; i < t->req.n_failure; i++) free_op(t->ops[TG_ETCD_ELSE][i]);
  free(t);
}

/* ------------------------------------------------------------ compares */

static Etcdserverpb__Compare *add_compare(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp) {
  static const Etcdserverpb__Compare__CompareResult results[] = {
      [TG_ETCD_EQ] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
      [TG_ETCD_NE] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
      [TG_ETCD_LT] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
      [TG_ETCD_GT] = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
  };
  if (!t) return NULL;
  if (t->failed) return NULL;
  if (!key || !key[0]) return fail(t, "compare: empty key"), NULL;
  if ((int)cmp < 0 || cmp > TG_ETCD_GT) return fail(t, "compare: bad operator"), NULL;
  if (t->req.n_compare == TXN_MAX_OPS) return fail(t, "too many compares"), NULL;
  Etcdserverpb__Compare *c = malloc(sizeof *c);
  if (!c) return fail(t, "out of memory"), NULL;
  etcdserverpb__compare__init(c);
  c->key.len = strlen(key);
  c->key.data = copy_bytes(key, c->key.len);
  if (!c->key.data) {
    free(c);
    return fail(t, "out of memory"), NULL;
  }
  c->result = results[cmp];
  t->compares[t->req.n_compare++] = c;
  return c;
}

int tg_etcd_txn_cmp_value(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp, const void *value,
                          size_t value_len) {
  if (!value && value_len) return fail(t, "compare: missing value");
  uint8_t *v = copy_bytes(value, value_len);
  if (!v) return fail(t, "out of memory");
  Etcdserverpb__Compare *c = add_compare(t, key, cmp);
  if (!c) {
    free(v);
    return -1;
  }
  c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
  c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
  c->value.data = v;
  c->value.len = value_len;
  return 0;
}

int tg_etcd_txn_cmp_version(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp, int64_t version) {
  Etcdserverpb__Compare *c = add_compare(t, key, cmp);
  if (!c) return -1;
  c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
  c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
  c->version = version;
  return 0;
}

int tg_etcd_txn_cmp_create_revision(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp,
                                    int64_t revision) {
  Etcdserverpb__Compare *c = add_compare(t, key, cmp);
  if (!c) return -1;
  c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
  c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
  c->create_revision = revision;
  return 0;
}

int tg_etcd_txn_cmp_mod_revision(tg_etcd_txn *t, const char *key, tg_etcd_cmp cmp,
                                 int64_t revision) {
  Etcdserverpb__Compare *c = add_compare(t, key, cmp);
  if (!c) return -1;
  c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
  c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
  c->mod_revision = revision;
  return 0;
}

/* ------------------------------------------------------------------ ops */

static Etcdserverpb__RequestOp *add_op(tg_etcd_txn *t, tg_etcd_branch branch, const char *key) {
  if (!t || t->failed) return NULL;
  if (branch != TG_ETCD_THEN && branch != TG_ETCD_ELSE) return fail(t, "op: bad branch"), NULL;
  if (!key) return fail(t, "op: missing key"), NULL;
  size_t *n = branch == TG_ETCD_THEN ? &t->req.n_success : &t->req.n_failure;
  if (*n == TXN_MAX_OPS) return fail(t, "too many ops"), NULL;
  Etcdserverpb__RequestOp *op = malloc(sizeof *op);
  if (!op) return fail(t, "out of memory"), NULL;
  etcdserverpb__request_op__init(op);
  t->ops[branch][(*n)++] = op;
  return op;
}

int tg_etcd_txn_put(tg_etcd_txn *t, tg_etcd_branch branch, const char *key, const void *value,
                    size_t value_len, int64_t lease) {
  if (!value && value_len) return fail(t, "put: missing value");
  Etcdserverpb__RequestOp *op = add_op(t, branch, key);
  if (!op) return -1;
  Etcdserverpb__PutRequest *p = malloc(sizeof *p);
  if (!p) return fail(t, "out of memory");
  etcdserverpb__put_request__init(p);
  op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
  op->request_put = p;
  p->key.len = strlen(key);
  p->key.data = copy_bytes(key, p->key.len);
  p->value.data = copy_bytes(value, value_len);
  p->value.len = value_len;
  p->lease = lease;
  if (!p->key.data || !p->value.data) return fail(t, "out of memory");
  return 0;
}

int tg_etcd_txn_delete(tg_etcd_txn *t, tg_etcd_branch branch, const char *key, int prefix) {
  Etcdserverpb__RequestOp *op = add_op(t, branch, key);
  if (!op) return -1;
  Etcdserverpb__DeleteRangeRequest *d = malloc(sizeof *d);
  if (!d) return fail(t, "out of memory");
  etcdserverpb__delete_range_request__init(d);
  op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
  op->request_delete_range = d;
  if (own_range(&d->key, &d->range_end, key, prefix, NULL) != 0) return fail(t, "out of memory");
  return 0;
}

int tg_etcd_txn_get(tg_etcd_txn *t, tg_etcd_branch branch, const char *key,
                    const tg_etcd_range_opts *opts) {
  Etcdserverpb__RequestOp *op = add_op(t, branch, key);
  if (!op) return -1;
  Etcdserverpb__RangeRequest *r = malloc(sizeof *r);
  if (!r) return fail(t, "out of memory");
  etcdserverpb__range_request__init(r);
  op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
  op->request_range = r;
  uint8_t *unused = NULL;
  if (etcd_fill_range(r, key, opts, &unused) != 0) {
    r->key.data = r->range_end.data = NULL;
    return fail(t, "out of memory");
  }
  free(unused);
  if (own_range(&r->key, &r->range_end, key, opts ? opts->prefix : 0,
                opts ? opts->range_end : NULL) != 0)
    return fail(t, "out of memory");
  return 0;
}

/* --------------------------------------------------------------- commit */

void tg_etcd_txn_result_free(tg_etcd_txn_result *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n_responses; i++) tg_etcd_range_result_free(&r->responses[i].range);
  free(r->responses);
  memset(r, 0, sizeof *r);
}

static int copy_txn_result(tg_etcd_txn_result *out, const Etcdserverpb__TxnResponse *tr) {
  out->succeeded = tr->succeeded != 0;
  out->revision = tr->header ? tr->header->revision : 0;
  if (tr->n_responses == 0) return 0;
  out->responses = calloc(tr->n_responses, sizeof *out->responses);
  if (!out->responses) return -1;
  out->n_responses = tr->n_responses;
  for (size_t i = 0; i < tr->n_responses; i++) {
    const Etcdserverpb__ResponseOp *op = tr->responses[i];
    tg_etcd_op_result *res = &out->responses[i];
    switch (op->response_case) {
      case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
        res->type = TG_ETCD_OP_RANGE;
        if (op->response_range && etcd_range_result_copy(&res->range, op->response_range) != 0)
          return -1;
        break;
      case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
        res->type = TG_ETCD_OP_PUT;
        break;
      case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
        res->type = TG_ETCD_OP_DELETE;
        res->deleted = op->response_delete_range ? op->response_delete_range->deleted : 0;
        break;
      default:
        break;
    }
  }
  return 0;
}

tg_rpc_code tg_etcd_txn_commit(tg_etcd *c, const tg_etcd_txn *t, tg_etcd_txn_result *out,
                               tg_rpc_status *st) {
  if (out) memset(out, 0, sizeof *out);
  if (!c || !t) return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd txn: missing argument");
  if (t->failed)
    return tg_rpc_status_set(st, TG_RPC_INVALID_ARGUMENT, "etcd txn: builder error: %s", t->why);
  ProtobufCMessage *resp = NULL;
  tg_rpc_code code = etcd_unary(c, "/etcdserverpb.KV/Txn", &t->req.base,
                                &etcdserverpb__txn_response__descriptor, &resp, st);
  if (code != TG_RPC_OK) return code;
  if (out && copy_txn_result(out, (Etcdserverpb__TxnResponse *)resp) != 0) {
    tg_etcd_txn_result_free(out);
    code = tg_rpc_status_set(st, TG_RPC_RESOURCE_EXHAUSTED, "etcd txn: out of memory");
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return code;
}
