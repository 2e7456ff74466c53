# connpool - install rules: headers, the exported connpool::connpool target and a relocatable
# package config, so that `find_package(connpool CONFIG REQUIRED)` works after `cmake --install`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Header-only, hence architecture-independent: share/cmake/<pkg>, not lib/cmake/<pkg>.
set(CONNPOOL_INSTALL_CMAKEDIR
    "${CMAKE_INSTALL_DATADIR}/cmake/connpool"
    CACHE STRING "Where connpoolConfig.cmake is installed, relative to the install prefix")
mark_as_advanced(CONNPOOL_INSTALL_CMAKEDIR)

# INCLUDES DESTINATION as well as the FILE_SET, for consumers on older CMake.
install(
  TARGETS connpool
  EXPORT connpoolTargets
  FILE_SET HEADERS
  INCLUDES
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(
  EXPORT connpoolTargets
  NAMESPACE connpool::
  DESTINATION "${CONNPOOL_INSTALL_CMAKEDIR}")

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/connpoolConfig.cmake.in" "${PROJECT_BINARY_DIR}/connpoolConfig.cmake"
  INSTALL_DESTINATION "${CONNPOOL_INSTALL_CMAKEDIR}")

# While the version is 0.x, SameMajorVersion makes every 0.y accept every other 0.y.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/connpoolConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)

install(FILES "${PROJECT_BINARY_DIR}/connpoolConfig.cmake"
              "${PROJECT_BINARY_DIR}/connpoolConfigVersion.cmake"
        DESTINATION "${CONNPOOL_INSTALL_CMAKEDIR}")

# pkg-config, for users without CMake (a Makefile, Meson, autotools): connpool.pc in
# share/pkgconfig (architecture-independent), relocatable through ${pcfiledir}.
set(CONNPOOL_INSTALL_PKGCONFIGDIR
    "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where connpool.pc is installed, relative to the install prefix")
mark_as_advanced(CONNPOOL_INSTALL_PKGCONFIGDIR)
# From the .pc file's directory back to the prefix: one ".." per path component.
string(REGEX REPLACE "[^/]+" ".." CONNPOOL_PC_TO_PREFIX "${CONNPOOL_INSTALL_PKGCONFIGDIR}")
configure_file("${PROJECT_SOURCE_DIR}/cmake/connpool.pc.in" "${PROJECT_BINARY_DIR}/connpool.pc"
               @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/connpool.pc" DESTINATION "${CONNPOOL_INSTALL_PKGCONFIGDIR}")
