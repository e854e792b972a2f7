/* Fixed-point conversion and exact sums for gradients (see fixed.h for the
 * scheme). Every conversion is a pure function of one element, so where
 * and in which grouping it runs cannot change a bit of the result. */
#include "trainer/model/fixed.h"

#include <math.h>

#define LIMB_BITS 32
#define LIMB_MASK 0xffffffffu

/* One term: checks the range, then rounds half to even (lrint in the
 * default rounding mode). g * 2^32 is exact in double. */
static tg_model_status to_fixed(double g, int64_t *q) {
  if (!isfinite(g)) return TG_MODEL_ENONFINITE;
  if (fabs(g) > TG_FIXED_MAX_ABS) return TG_MODEL_ERANGE;
  *q = (int64_t)llrint(ldexp(g, TG_FIXED_FRAC_BITS));
  return TG_MODEL_OK;
}

tg_model_status tg_fixed_accumulate(int64_t *acc, const float *g, size_t n, size_t *bad_index) {
  if ((!acc || !g) && n) return TG_MODEL_EINVAL;
  for (size_t i = 0; i < n; i++) {
    int64_t q;
    tg_model_status st = to_fixed(g[i], &q);
    if (st == TG_MODEL_OK && __builtin_add_overflow(acc[i], q, &acc[i])) st = TG_MODEL_EOVERFLOW;
    if (st != TG_MODEL_OK) {
      if (bad_index) *bad_index = i;
      return st;
    }
  }
  return TG_MODEL_OK;
}

tg_model_status tg_fixed_add(int64_t *acc, const int64_t *add, size_t n) {
  if ((!acc || !add) && n) return TG_MODEL_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (__builtin_add_overflow(acc[i], add[i], &acc[i])) return TG_MODEL_EOVERFLOW;
  return TG_MODEL_OK;
}

tg_model_status tg_fixed_to_float(float *out, const int64_t *acc, size_t n, uint64_t terms) {
  if (((!out || !acc) && n) || terms == 0) return TG_MODEL_EINVAL;
  double inv_terms = 1.0 / (double)terms; /* same double on every rank */
  for (size_t i = 0; i < n; i++)
    out[i] = (float)(ldexp((double)acc[i], -TG_FIXED_FRAC_BITS) * inv_terms);
  return TG_MODEL_OK;
}

tg_model_status tg_fixed_from_scalar(double value, int64_t *out) {
  if (!out) return TG_MODEL_EINVAL;
  return to_fixed(value, out);
}

double tg_fixed_to_scalar(int64_t value, uint64_t terms) {
  if (terms == 0) return NAN;
  return ldexp((double)value, -TG_FIXED_FRAC_BITS) / (double)terms;
}

tg_model_status tg_fixed_sqnorm(const float *g, size_t begin, size_t end,
                                int64_t limbs[TG_FIXED_SQNORM_LIMBS]) {
  if (!limbs || begin > end || (!g && end > begin)) return TG_MODEL_EINVAL;
  unsigned __int128 sum = 0;
  for (size_t i = begin; i < end; i++) {
    double x = g[i];
    if (!isfinite(x)) return TG_MODEL_ENONFINITE;
    if (fabs(x) > TG_FIXED_MAX_ABS) return TG_MODEL_ERANGE;
    /* x*x is exact in double (24-bit mantissa squared); below 2^94 after
     * scaling, so the conversion only drops bits under 2^-64. */
    unsigned __int128 term = (unsigned __int128)ldexp(x * x, TG_FIXED_SQNORM_FRAC_BITS);
    if (__builtin_add_overflow(sum, term, &sum)) return TG_MODEL_EOVERFLOW;
  }
  for (int k = 0; k < TG_FIXED_SQNORM_LIMBS; k++) {
    limbs[k] = (int64_t)(uint64_t)(sum & LIMB_MASK);
    sum >>= LIMB_BITS;
  }
  return TG_MODEL_OK;
}

double tg_fixed_sqnorm_to_norm(const int64_t limbs[TG_FIXED_SQNORM_LIMBS]) {
  if (!limbs) return NAN;
  /* Summed limbs may exceed 32 bits; normalising the carries gives the one
   * representation of the integer, so the double below does not depend on
   * how the shards split the sum. */
  uint64_t carry = 0;
  double value = 0.0;
  uint64_t digit[TG_FIXED_SQNORM_LIMBS];
  for (int k = 0; k < TG_FIXED_SQNORM_LIMBS; k++) {
    if (limbs[k] < 0) return NAN;
    uint64_t v = (uint64_t)limbs[k] + carry; /* < 2^63 + 2^32: no wrap */
    digit[k] = v & LIMB_MASK;
    carry = v >> LIMB_BITS;
  }
  value = ldexp((double)carry, LIMB_BITS * TG_FIXED_SQNORM_LIMBS);
  unsigned __int128 low = 0;
  for (int k = TG_FIXED_SQNORM_LIMBS - 1; k >= 0; k--) low = (low << LIMB_BITS) | digit[k];
  value += (double)low;
  return sqrt(ldexp(value, -TG_FIXED_SQNORM_FRAC_BITS));
}
