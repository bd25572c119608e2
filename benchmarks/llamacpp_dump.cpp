// bitcpm-llama-dump: token ids and logits straight from libllama, to compare a GGUF export of a
// bitcpm-ms model with the model itself (benchmarks/llamacpp.py builds and runs it).
//
//   bitcpm-llama-dump tokenize MODEL.gguf TEXT_FILE OUT.i32
//       llama_tokenize(add_special = true, parse_special = false): BOS / space prefix are added
//       exactly when the GGUF's tokenizer metadata asks for them. Writes int32 ids.
//   bitcpm-llama-dump tokenize_special MODEL.gguf TEXT_FILE OUT.i32
//       the same with parse_special = true (control tokens in the text, e.g. a rendered chat, become
//       their ids, as llama.cpp's chat front ends tokenize).
//   bitcpm-llama-dump logits MODEL.gguf IDS.i32 OUT.f32 THREADS
//       one llama_decode of the whole id sequence (float32 K/V cache, no flash attention), logits of every position: float32 [n, n_vocab].
#include "llama.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static std::string read_file(const char * path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) { fprintf(stderr, "cannot read %s\n", path); exit(3); }
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

static void write_file(const char * path, const void * data, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) { fprintf(stderr, "cannot write %s\n", path); exit(3); }
}

int main(int argc, char ** argv) {
    if (argc < 5 || (strcmp(argv[1], "tokenize") && strcmp(argv[1], "tokenize_special") && strcmp(argv[1], "logits"))) {
        fprintf(stderr, "usage: %s tokenize[_special] MODEL TEXT OUT.i32 | logits MODEL IDS.i32 OUT.f32 THREADS\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[2], mp);
    if (!model) { fprintf(stderr, "llama.cpp could not load %s\n", argv[2]); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);

    if (!strncmp(argv[1], "tokenize", 8)) {
        const bool special = !strcmp(argv[1], "tokenize_special");
        std::string text = read_file(argv[3]);
        int32_t n = -llama_tokenize(vocab, text.data(), (int32_t) text.size(), nullptr, 0, true, special);
        std::vector<llama_token> ids(n > 0 ? n : 0);
        if (n > 0 && llama_tokenize(vocab, text.data(), (int32_t) text.size(), ids.data(), n, true, special) != n) {
            fprintf(stderr, "llama_tokenize failed\n");
            return 1;
        }
        write_file(argv[4], ids.data(), ids.size() * sizeof(llama_token));
    } else {
        if (argc < 6) { fprintf(stderr, "logits needs THREADS\n"); return 2; }
        std::string raw = read_file(argv[3]);
        const int32_t n = (int32_t) (raw.size() / sizeof(llama_token));
        if (n == 0) { fprintf(stderr, "no token ids in %s\n", argv[3]); return 2; }
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t) n;
        cp.n_threads = cp.n_threads_batch = atoi(argv[5]);
        cp.no_perf = true;
        // logits as the GGUF's weights give them: float32 K/V cache and no flash attention. Both are
        // runtime choices, not the model's: the default f16 cache rounds keys and values to ~1e-3, and
        // the CPU flash-attention kernel (on by default) computes in half precision -- measured on a
        // random MiniCPM4-shaped model: 2.1e-4 relative logit error with it, 1.6e-6 without.
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) { fprintf(stderr, "llama_init_from_model failed\n"); return 1; }
        llama_batch batch = llama_batch_init(n, 0, 1);
        for (int32_t i = 0; i < n; ++i) {
            memcpy(&batch.token[i], raw.data() + i * sizeof(llama_token), sizeof(llama_token));
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;      // output the logits of every position
        }
        batch.n_tokens = n;
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "llama_decode failed\n"); return 1; }
        const int32_t n_vocab = llama_vocab_n_tokens(vocab);
        std::vector<float> out((size_t) n * n_vocab);
        for (int32_t i = 0; i < n; ++i) memcpy(&out[(size_t) i * n_vocab], llama_get_logits_ith(ctx, i), n_vocab * sizeof(float));
        write_file(argv[4], out.data(), out.size() * sizeof(float));
        llama_batch_free(batch);
        llama_free(ctx);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
