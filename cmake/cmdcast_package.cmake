# Installing cmdcast and packaging it as a Debian package (CPack's DEB generator).
# `tools/package [PRESET]` is the one command: it builds the native preset and the wasm
# preset (the web client), then runs CPack here, giving build/package/cmdcast_VERSION_amd64.deb.
# The three executables are installed by the CMakeLists that make them; everything else
# (the web client, the service, the configuration, man pages, docs) is installed here.
include(GNUInstallDirs)

set(CMDCAST_WEB_DIR "${PROJECT_SOURCE_DIR}/build/wasm/web" CACHE PATH
    "The built web client (the wasm preset's web/) that is installed into share/cmdcast/web")
set(CMDCAST_PACKAGE_MAINTAINER "cmdcast maintainers <cmdcast@example.org>" CACHE STRING
    "Maintainer field of the Debian package")

# `install` (and CPack) must not build: tools/package builds under the shared build lock first,
# and packaging an existing build (tools/package dev, the package test) compiles nothing.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

# Resolve every symbol at start, so the GOT can be read-only from the first instruction
# (with Debian's default RELRO): lintian's hardening-no-bindnow.
foreach(program cmdcast-server cmdcast cmdcast-desktop)
  target_link_options(${program} PRIVATE -Wl,-z,now)
endforeach()

set(deploy ${PROJECT_SOURCE_DIR}/deploy)
set(doc_dir ${CMAKE_INSTALL_DATAROOTDIR}/doc/cmdcast)

install(DIRECTORY "${CMDCAST_WEB_DIR}/" DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/cmdcast/web)
# Debian's places, whatever the prefix: the service beside the other packages' units, and the
# configuration in /etc (a conffile: an administrator's edits survive upgrades). Being
# absolute, they land there for `cmake --install` with any --prefix too: stage with DESTDIR.
install(FILES ${deploy}/systemd/cmdcast.service DESTINATION /lib/systemd/system)
install(FILES ${deploy}/cmdcast.toml DESTINATION /etc/cmdcast)

# Man pages and the changelog go in gzipped (-n: no name or time stamp, so the package's
# bytes depend on the sources only). They are compressed while installing, not built.
set(gz_dir ${CMAKE_CURRENT_BINARY_DIR}/package-gz)
function(cmdcast_install_gzipped source destination)
  get_filename_component(name "${source}" NAME)
  install(CODE "
    file(MAKE_DIRECTORY \"${gz_dir}\")
    execute_process(COMMAND gzip -9 -n -c \"${source}\" OUTPUT_FILE \"${gz_dir}/${name}.gz\"
                    COMMAND_ERROR_IS_FATAL ANY)")
  install(FILES ${gz_dir}/${name}.gz DESTINATION ${destination})
endfunction()
cmdcast_install_gzipped(${PROJECT_SOURCE_DIR}/docs/man/cmdcast-server.8 ${CMAKE_INSTALL_MANDIR}/man8)
cmdcast_install_gzipped(${PROJECT_SOURCE_DIR}/docs/man/cmdcast.1 ${CMAKE_INSTALL_MANDIR}/man1)
cmdcast_install_gzipped(${PROJECT_SOURCE_DIR}/docs/man/cmdcast-desktop.1 ${CMAKE_INSTALL_MANDIR}/man1)
cmdcast_install_gzipped(${deploy}/debian/changelog ${doc_dir})

install(FILES ${deploy}/debian/copyright ${PROJECT_SOURCE_DIR}/docs/deploy.md
              ${PROJECT_SOURCE_DIR}/docs/config.md ${PROJECT_SOURCE_DIR}/docs/security.md
              ${PROJECT_SOURCE_DIR}/docs/protocol.md
        DESTINATION ${doc_dir})
install(FILES ${PROJECT_SOURCE_DIR}/docs/proxy.md DESTINATION ${doc_dir} OPTIONAL)
# The reverse proxy site (deploy/nginx/cmdcast.conf), as an example to copy into nginx.
install(FILES ${deploy}/nginx/cmdcast.conf DESTINATION ${doc_dir}/examples
        RENAME nginx-cmdcast.conf OPTIONAL)
install(FILES ${deploy}/debian/lintian-overrides DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides
        RENAME cmdcast)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cmdcast)
set(CPACK_PACKAGE_VENDOR cmdcast)
set(CPACK_PACKAGE_CONTACT "${CMDCAST_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "whitelisted commands over SSH, output streamed live to every watcher")
set(CPACK_PACKAGE_DESCRIPTION
    "cmdcast runs whitelisted commands on remote machines over SSH and
streams their output, as it is produced, to everyone watching: in a
browser, in a desktop window or in a terminal, with a progress bar for
package upgrades. Every run is recorded in an audit database.

This package contains cmdcast-server (run as the systemd service
cmdcast.service by the cmdcast system user), its web client, the
cmdcast command line client and the cmdcast-desktop client.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CMDCAST_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The libraries come from dpkg-shlibdeps; adduser is what postinst makes the user with.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS openssh-client)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "nginx, sqlite3")
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${deploy}/debian/conffiles ${deploy}/debian/postinst ${deploy}/debian/prerm ${deploy}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
