# Boost 1.81's header-only libraries (JSON now; Asio, Beast and URL for the server).
# Natively they are in the default include path. For WebAssembly, /usr/include must not be on
# the include path (it would mix glibc headers into Emscripten's sysroot), so a folder in the
# build tree holds just a `boost` symlink and is added as a system include directory.
add_library(cmdcast_boost INTERFACE)
if(EMSCRIPTEN)
  set(boost_only_dir ${CMAKE_BINARY_DIR}/boost-include)
  file(MAKE_DIRECTORY ${boost_only_dir})
  file(CREATE_LINK /usr/include/boost ${boost_only_dir}/boost SYMBOLIC)
  target_include_directories(cmdcast_boost SYSTEM INTERFACE ${boost_only_dir})
else()
  find_package(Boost 1.81 EXACT REQUIRED)
  target_link_libraries(cmdcast_boost INTERFACE Boost::headers)
endif()
# Boost.JSON is compiled once, in common/src/boost_json.cpp.
target_compile_definitions(cmdcast_boost INTERFACE BOOST_JSON_NO_LIB BOOST_CONTAINER_NO_LIB)
