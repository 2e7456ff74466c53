# connpool - the client libraries of the integration tests and server examples (optional).
#
# Defines PostgreSQL::PostgreSQL (libpq, Debian: libpq-dev, through CMake's FindPostgreSQL)
# and hiredis::hiredis (Debian: libhiredis-dev, which ships no CMake package) when found.
# Without them the tests and examples that need them are skipped with a STATUS message.
include_guard(DIRECTORY)  # imported targets are visible in their directory only

find_package(PostgreSQL QUIET)

if(NOT TARGET hiredis::hiredis)
  find_path(CONNPOOL_HIREDIS_INCLUDE_DIR hiredis/hiredis.h)
  find_library(CONNPOOL_HIREDIS_LIBRARY hiredis)
  mark_as_advanced(CONNPOOL_HIREDIS_INCLUDE_DIR CONNPOOL_HIREDIS_LIBRARY)
  if(CONNPOOL_HIREDIS_INCLUDE_DIR AND CONNPOOL_HIREDIS_LIBRARY)
    add_library(hiredis::hiredis UNKNOWN IMPORTED)
    set_target_properties(hiredis::hiredis PROPERTIES IMPORTED_LOCATION "${CONNPOOL_HIREDIS_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${CONNPOOL_HIREDIS_INCLUDE_DIR}")
  endif()
endif()
