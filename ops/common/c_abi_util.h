// Helpers of the exported C functions of both kernel libraries (each compiles c_abi_util.cpp into
// its own .so, so each library keeps its own last error).
//
// Error convention: an entry point returns 0 on success, or a nonzero code after set_error()
// stored a message; the library exports a getter (bitcpm_last_error, bitcpm_fused_last_error) that
// returns last_error().
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

// Only these symbols leave a library (it is built with -fvisibility=hidden).
#define BITCPM_API extern "C" __attribute__((visibility("default")))

// The arguments of a MindSpore AOT entry point (ops.Custom func_type="aot"): params are the inputs
// then the outputs, each with its ndim, shape and dtype name; the stream and extra pointers are unused.
#define BITCPM_AOT_ARGS int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *, void *

namespace bitcpm {

// Defined by each library's c_abi.cpp: a prefix under which set_error() also prints every message
// to stderr (MindSpore reports only an AOT op's return code), or nullptr for no printing.
extern const char *const kErrorEchoPrefix;

// Stores msg for last_error() and returns code (the C functions return it as is).
int set_error(int code, const std::string &msg);

// A copy of the last message, owned by the calling thread and valid until its next call.
const char *last_error();

// Null-safe dtype comparison, and a dtype name for messages ("null" when absent).
inline bool dtype_is(const char *d, const char *want) { return d != nullptr && std::strcmp(d, want) == 0; }
inline const char *dtype_name(const char *d) { return d != nullptr ? d : "null"; }

// set_error(3, "<name>: expected <expected> <noun>, got <nparam>") unless nparam == expected.
int check_count(const char *name, int nparam, int expected, const char *noun);

}  // namespace bitcpm
