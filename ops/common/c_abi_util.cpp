// The error state and argument checks of the exported C functions (c_abi_util.h).

#include "c_abi_util.h"

#include <cstdio>
#include <mutex>

namespace bitcpm {

namespace {
std::mutex g_err_mu;
std::string g_err;
}  // namespace

int set_error(int code, const std::string &msg) {
  std::lock_guard<std::mutex> lk(g_err_mu);
  g_err = msg;
  if (kErrorEchoPrefix != nullptr) std::fprintf(stderr, "%s: %s\n", kErrorEchoPrefix, msg.c_str());
  return code;
}

const char *last_error() {
  static thread_local std::string copy;
  std::lock_guard<std::mutex> lk(g_err_mu);
  copy = g_err;
  return copy.c_str();
}

int check_count(const char *name, int nparam, int expected, const char *noun) {
  if (nparam == expected) return 0;
  return set_error(3, std::string(name) + ": expected " + std::to_string(expected) + " " + noun + ", got " +
                          std::to_string(nparam));
}

}  // namespace bitcpm
