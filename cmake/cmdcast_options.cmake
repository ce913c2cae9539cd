# Warnings and sanitizers for cmdcast's own targets (not for third-party sources).
add_library(cmdcast_warnings INTERFACE)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(cmdcast_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow
                         -Wnon-virtual-dtor -Wconversion -Wno-sign-conversion
                         # C++20 designated initializers may leave defaulted members out
                         -Wno-missing-field-initializers)
endif()

if(CMDCAST_SANITIZE)
  # Applied globally so every object, test and tool is instrumented alike.
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(CMDCAST_FUZZ)
  # Every object instrumented for the fuzzers (coverage, ASan, UBSan); the targets add the
  # fuzzer's main. UBSan's `function` check is left out: clang 14 cannot emit it for
  # coroutines ("Cannot represent a difference across sections").
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=function -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

if(EMSCRIPTEN)
  # Node runs the WASM tests and benchmarks: let them read the real file system (test data)
  # and grow memory as native code would.
  set(CMDCAST_WASM_NODE_LINK_OPTIONS -sNODERAWFS=1 -sALLOW_MEMORY_GROWTH=1 -sEXIT_RUNTIME=1)
  set(CMAKE_CROSSCOMPILING_EMULATOR node --no-experimental-fetch)
endif()

# WebAssembly test names carry a prefix, so one ctest log tells the two builds apart.
if(EMSCRIPTEN)
  set(CMDCAST_TEST_PREFIX "wasm.")
else()
  set(CMDCAST_TEST_PREFIX "")
endif()
