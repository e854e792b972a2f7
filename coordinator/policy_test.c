/* Tests for the placement policy: each rule of policy.h on a small cluster. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/policy.h"

#define MAXN 16

typedef struct {
  char ids[MAXN][24];
  tg_policy_node nodes[MAXN];
  size_t n;
} cluster;

/* n nodes "n0".."n{n-1}", all eligible; node i eligible since i ms. */
static void make(cluster *c, size_t n) {
  memset(c, 0, sizeof *c);
  c->n = n;
  for (size_t i = 0; i < n; i++) {
    snprintf(c->ids[i], sizeof c->ids[i], "n%zu", i);
    c->nodes[i] = (tg_policy_node){c->ids[i], 1, (int64_t)i};
  }
}

static tg_policy_spec spec(uint32_t min, uint32_t max, uint32_t slots, uint32_t gran) {
  return (tg_policy_spec){min, max, slots, gran, 1000};
}

/* The node ids of a plan, space-separated, for readable assertions. */
static const char *ids(const cluster *c, const tg_policy_plan *p) {
  static char buf[256];
  buf[0] = '\0';
  for (size_t k = 0; k < p->n_nodes; k++) {
    if (k) strcat(buf, " ");
    strcat(buf, c->ids[p->positions[k]]);
  }
  return buf;
}

/* The policy takes the current world as indexes into the node array. */
static void decide(const tg_policy_spec *s, const char *const *cur, size_t ncur, int had,
                   cluster *c, int64_t now, tg_policy_plan *p) {
  size_t idx[MAXN];
  for (size_t k = 0; k < ncur; k++) {
    idx[k] = TG_POLICY_GONE;
    for (size_t i = 0; i < c->n; i++)
      if (strcmp(c->ids[i], cur[k]) == 0) idx[k] = i;
  }
  assert_int_equal(tg_policy_decide(s, idx, ncur, had, c->nodes, c->n, now, p), 0);
}

static void test_waits_for_min_then_last_call(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 4, 2, 1);
  make(&c, 1);
  decide(&s, NULL, 0, 0, &c, 10, &p);
  assert_int_equal(p.action, TG_POLICY_WAIT);
  assert_int_equal(p.wake_at_ms, 0);
  make(&c, 3); /* min reached at t=1 (second node); last call until 1001 */
  decide(&s, NULL, 0, 0, &c, 500, &p);
  assert_int_equal(p.action, TG_POLICY_WAIT);
  assert_int_equal(p.wake_at_ms, 1001);
  decide(&s, NULL, 0, 0, &c, 1001, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_int_equal(p.reason, TG_REASON_FIRST);
  assert_string_equal(ids(&c, &p), "n0 n1 n2");
  assert_int_equal(p.world_size, 6);
  free(p.positions);
}

static void test_max_forms_at_once_and_rest_are_spares(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 4, 2, 1);
  make(&c, 6);
  decide(&s, NULL, 0, 0, &c, 6, &p); /* within last call, but max is reached */
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_string_equal(ids(&c, &p), "n0 n1 n2 n3");
  free(p.positions);
}

static void test_spare_takes_lost_position(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 4, 2, 1);
  make(&c, 5);
  const char *cur[] = {"n0", "n1", "n2", "n3"};
  c.nodes[1].eligible = 0;
  decide(&s, cur, 4, 1, &c, 5000, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_int_equal(p.reason, TG_REASON_REPLACE);
  assert_string_equal(ids(&c, &p), "n0 n4 n2 n3"); /* n4 holds n1's ranks 2,3 */
  assert_int_equal(p.world_size, 8);
  free(p.positions);
}

static void test_shrink_keeps_granularity(void **state) {
  cluster c;
  tg_policy_plan p;
  /* 2 slots per node, world size a multiple of 4: nodes in steps of 2. */
  tg_policy_spec s = spec(2, 4, 2, 4);
  assert_int_equal(tg_policy_node_step(&s), 2);
  make(&c, 4);
  const char *cur[] = {"n0", "n1", "n2", "n3"};
  c.nodes[2].eligible = 0;
  decide(&s, cur, 4, 1, &c, 5000, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_int_equal(p.reason, TG_REASON_SHRINK);
  assert_string_equal(ids(&c, &p), "n0 n1"); /* 3 survivors, rounded down to 2 */
  assert_int_equal(p.world_size, 4);
  free(p.positions);
}

static void test_shrink_without_granularity(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 4, 2, 1);
  make(&c, 4);
  const char *cur[] = {"n0", "n1", "n2", "n3"};
  c.nodes[0].eligible = 0;
  decide(&s, cur, 4, 1, &c, 5000, &p);
  assert_string_equal(ids(&c, &p), "n1 n2 n3");
  assert_int_equal(p.world_size, 6);
  free(p.positions);
}

static void test_below_min_suspends_then_resumes(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(3, 4, 1, 1);
  make(&c, 4);
  const char *cur[] = {"n0", "n1", "n2", "n3"};
  c.nodes[0].eligible = 0;
  c.nodes[1].eligible = 0;
  decide(&s, cur, 4, 1, &c, 5000, &p);
  assert_int_equal(p.action, TG_POLICY_SUSPEND);
  c.nodes[1].eligible = 1;
  c.nodes[1].eligible_since_ms = 6000;
  decide(&s, NULL, 0, 1, &c, 6500, &p);
  assert_int_equal(p.action, TG_POLICY_WAIT); /* last call for n0 */
  assert_int_equal(p.wake_at_ms, 7000);
  decide(&s, NULL, 0, 1, &c, 7000, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_int_equal(p.reason, TG_REASON_RESUME);
  assert_string_equal(ids(&c, &p), "n2 n3 n1");
  free(p.positions);
}

static void test_grow_back_after_last_call(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 5, 2, 1); /* below max after growing: last call applies */
  make(&c, 4);
  const char *cur[] = {"n0", "n2", "n3"};
  c.nodes[1].eligible_since_ms = 9000; /* n1 came back */
  decide(&s, cur, 3, 1, &c, 9500, &p);
  assert_int_equal(p.action, TG_POLICY_WAIT);
  assert_int_equal(p.wake_at_ms, 10000);
  decide(&s, cur, 3, 1, &c, 10000, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  assert_int_equal(p.reason, TG_REASON_GROW);
  assert_string_equal(ids(&c, &p), "n0 n2 n3 n1"); /* survivors keep their ranks */
  free(p.positions);
  tg_policy_spec full = spec(2, 4, 2, 1); /* growing to max does not wait */
  decide(&full, cur, 3, 1, &c, 9500, &p);
  assert_int_equal(p.action, TG_POLICY_FORM);
  free(p.positions);
}

static void test_keep_when_full_or_no_step(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(2, 4, 2, 1);
  make(&c, 6);
  const char *full[] = {"n0", "n1", "n2", "n3"};
  decide(&s, full, 4, 1, &c, 9000, &p);
  assert_int_equal(p.action, TG_POLICY_KEEP);
  /* Steps of 2 nodes: one returning node is not enough to grow. */
  tg_policy_spec g = spec(2, 4, 2, 4);
  make(&c, 3);
  const char *two[] = {"n0", "n1"};
  decide(&g, two, 2, 1, &c, 9000, &p);
  assert_int_equal(p.action, TG_POLICY_KEEP);
}

static void test_unknown_member_counts_as_lost(void **state) {
  cluster c;
  tg_policy_plan p;
  tg_policy_spec s = spec(1, 2, 1, 1);
  make(&c, 2);
  const char *cur[] = {"n0", "gone"};
  decide(&s, cur, 2, 1, &c, 9000, &p);
  assert_int_equal(p.reason, TG_REASON_REPLACE);
  assert_string_equal(ids(&c, &p), "n0 n1");
  free(p.positions);
}

static void test_input_order_does_not_matter(void **state) {
  cluster a, b;
  tg_policy_plan pa, pb;
  tg_policy_spec s = spec(2, 3, 1, 1);
  make(&a, 5);
  for (size_t i = 0; i < 5; i++) a.nodes[i].eligible_since_ms = 0;
  b = a;
  for (size_t i = 0; i < 5; i++) { /* the same nodes, listed in reverse */
    memcpy(b.ids[i], a.ids[4 - i], sizeof b.ids[i]);
    b.nodes[i] = (tg_policy_node){b.ids[i], 1, 0};
  }
  decide(&s, NULL, 0, 0, &a, 5000, &pa);
  decide(&s, NULL, 0, 0, &b, 5000, &pb);
  char first[256];
  snprintf(first, sizeof first, "%s", ids(&a, &pa));
  assert_string_equal(first, ids(&b, &pb));
  assert_string_equal(first, "n0 n1 n2");
  free(pa.positions);
  free(pb.positions);
}

static void test_spec_check(void **state) {
  char err[128];
  tg_policy_spec ok = spec(2, 4, 8, 16);
  assert_int_equal(tg_policy_spec_check(&ok, err, sizeof err), 0);
  tg_policy_spec bad = spec(3, 3, 1, 2); /* 3 nodes of 1 rank, multiple of 2: impossible */
  assert_int_equal(tg_policy_spec_check(&bad, err, sizeof err), -1);
  tg_policy_spec inverted = spec(4, 2, 1, 1);
  assert_int_equal(tg_policy_spec_check(&inverted, err, sizeof err), -1);
  tg_policy_spec zero = spec(0, 2, 1, 1);
  assert_int_equal(tg_policy_spec_check(&zero, err, sizeof err), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_waits_for_min_then_last_call),
      cmocka_unit_test(test_max_forms_at_once_and_rest_are_spares),
      cmocka_unit_test(test_spare_takes_lost_position),
      cmocka_unit_test(test_shrink_keeps_granularity),
      cmocka_unit_test(test_shrink_without_granularity),
      cmocka_unit_test(test_below_min_suspends_then_resumes),
      cmocka_unit_test(test_grow_back_after_last_call),
      cmocka_unit_test(test_keep_when_full_or_no_step),
      cmocka_unit_test(test_unknown_member_counts_as_lost),
      cmocka_unit_test(test_input_order_does_not_matter),
      cmocka_unit_test(test_spec_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
