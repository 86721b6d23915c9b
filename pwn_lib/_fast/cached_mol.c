/* Cached WaveNet generation with a mixture-of-logistics head, one step after another, in plain C.
 *
 * The maths of pwn_lib.wavenet.CachedState.step and DiscretizedMixLogistics.sample, for a chunk of steps,
 * without a Python call or a torch dispatch per operation: at batch 1 a step of the course teacher is about
 * 0.2 MFLOP, far less than the cost of the ~300 small torch calls that the reference step makes.
 * Built by `make setup` (or `make fast`); loaded by pwn_lib/_fast/__init__.py through ctypes. float32 only.
 *
 * Layouts (row-major, all float32):
 *   conv_w   L x (k, R, G): tap j multiplies the layer input j * d steps back (j = 0 is the present)
 *   cond     (n, L, B, G): conditioning + speaker + conv bias of each layer at each step of the chunk
 *   res_w    L x (G/2, R) and res_b L x R, both already times sqrt(1/2)
 *   skip_w   L x (G/2, S), already times 1/sqrt(L); skip_b (S,) the sum of the skip biases, times 1/sqrt(L)
 *   head1    (S, S) + (S,);  head2 (S, C) + (C,) with C = 3K: [logits | means | log_scales]
 *   ring     the layers' input queues, layer l holding (k - 1) d_l rows of (B, R); zeros at t = 0
 *   gumbel   (n, B, K) = -log(-log(u)) and lnoise (n, B) = log(u) - log1p(-u), drawn by torch
 *   prev     (B,) x[t - 1] in, the last sample out; x_out (n, B); params_out (n, B, C) or NULL
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

/* out[o] += sum_i x[i] * w[i * n_out + o] */
static void matvec_add(const float *x, const float *w, int n_in, int n_out, float *out) {
    for (int i = 0; i < n_in; i++) {
        const float xi = x[i];
        const float *row = w + (size_t)i * n_out;
        for (int o = 0; o < n_out; o++) out[o] = fmaf(xi, row[o], out[o]);
    }
}

int pwn_cached_mol(
    int B, int n, int t0, int L, int R, int G, int S, int k, const int *dilations,
    const float *w_in, const float *b_in, const float *conv_w, const float *cond,
    const float *res_w, const float *res_b, const float *skip_w, const float *skip_b,
    const float *head1_w, const float *head1_b, const float *head2_w, const float *head2_b,
    int K, float rho, float log_scale_min, int bits,
    float *ring, const float *gumbel, const float *lnoise, float *prev, float *x_out, float *params_out) {
    enum { MAX_CH = 1024 };
    const int half = G / 2, C = 3 * K;
    if (R > MAX_CH || G > MAX_CH || S > MAX_CH || C > MAX_CH) return 1;
    float h[MAX_CH], h_next[MAX_CH], a[MAX_CH], z[MAX_CH], skip[MAX_CH], hid[MAX_CH], out[MAX_CH];
    const float top = (float)((1 << bits) - 1), width = (float)(2.0 / ((1 << bits) - 1));
    for (int step = 0; step < n; step++) {
        const int t = t0 + step;
        for (int b = 0; b < B; b++) {
            for (int r = 0; r < R; r++) h[r] = prev[b] * w_in[r] + b_in[r];
            memcpy(skip, skip_b, sizeof(float) * S);
            float *queue = ring;
            for (int l = 0; l < L; l++) {
                const int d = dilations[l], size = (k - 1) * d;
                const float *w = conv_w + (size_t)l * k * R * G;
                memcpy(a, cond + (((size_t)step * L + l) * B + b) * G, sizeof(float) * G);
                matvec_add(h, w, R, G, a);  /* tap 0: the present input */
                for (int j = 1; j < k; j++) {
                    const float *past = queue + ((size_t)(((t - j * d) % size + size) % size) * B + b) * R;
                    matvec_add(past, w + (size_t)j * R * G, R, G, a);
                }
                if (size) memcpy(queue + ((size_t)(t % size) * B + b) * R, h, sizeof(float) * R);
                queue += (size_t)size * B * R;
                for (int c = 0; c < half; c++) z[c] = tanhf(a[c]) * (1.0f / (1.0f + expf(-a[half + c])));
                matvec_add(z, skip_w + (size_t)l * half * S, half, S, skip);
                if (l + 1 < L) {  /* the last layer's residual output is never read */
                    const float *rb = res_b + (size_t)l * R;
                    for (int r = 0; r < R; r++) h_next[r] = 0.70710678118654752f * h[r] + rb[r];
                    matvec_add(z, res_w + (size_t)l * half * R, half, R, h_next);
                    memcpy(h, h_next, sizeof(float) * R);
                }
            }
            for (int s = 0; s < S; s++) skip[s] = skip[s] > 0.0f ? skip[s] : 0.0f;
            memcpy(hid, head1_b, sizeof(float) * S);
            matvec_add(skip, head1_w, S, S, hid);
            for (int s = 0; s < S; s++) hid[s] = hid[s] > 0.0f ? hid[s] : 0.0f;
            memcpy(out, head2_b, sizeof(float) * C);
            matvec_add(hid, head2_w, S, C, out);
            for (int m = 0; m < K; m++) out[K + m] += rho * prev[b];
            if (params_out) memcpy(params_out + ((size_t)step * B + b) * C, out, sizeof(float) * C);
            /* Gumbel-max over log_softmax(logits) + gumbel, then the chosen logistic's inverse CDF */
            float peak = out[0], total = 0.0f;
            for (int m = 1; m < K; m++) peak = out[m] > peak ? out[m] : peak;
            for (int m = 0; m < K; m++) total += expf(out[m] - peak);
            const float log_total = logf(total);
            const float *gb = gumbel + ((size_t)step * B + b) * K;
            int choice = 0;
            float best = -INFINITY;
            for (int m = 0; m < K; m++) {
                const float score = ((out[m] - peak) - log_total) + gb[m];  /* torch's log_softmax order */
                if (score > best) { best = score; choice = m; }
            }
            float log_scale = out[2 * K + choice];
            log_scale = log_scale > log_scale_min ? log_scale : log_scale_min;
            float x = out[K + choice] + expf(log_scale) * lnoise[(size_t)step * B + b];
            x = x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x);
            x = rintf((x + 1.0f) / 2.0f * top) * width - 1.0f;
            prev[b] = x;
            x_out[(size_t)step * B + b] = x;
        }
    }
    return 0;
}
