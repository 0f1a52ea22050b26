# What `cmake --install` puts where; deploy/package.sh runs it with --prefix /usr into the
# Debian package. Man pages are generated from the built binary's --help (deploy/man/gen_man.py),
# so they follow the command line without hand edits.
include(GNUInstallDirs)

install(TARGETS rbdvault RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

find_program(HELP2MAN_PROGRAM help2man)
find_package(Python3 COMPONENTS Interpreter)
if(HELP2MAN_PROGRAM AND Python3_FOUND)
  set(RBDVAULT_MAN_DIR ${CMAKE_BINARY_DIR}/man)
  add_custom_command(OUTPUT ${RBDVAULT_MAN_DIR}/rbdvault.8
    COMMAND ${CMAKE_COMMAND} -E rm -rf ${RBDVAULT_MAN_DIR}
    COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/deploy/man/gen_man.py
            --binary $<TARGET_FILE:rbdvault> --out ${RBDVAULT_MAN_DIR}
    DEPENDS rbdvault ${PROJECT_SOURCE_DIR}/deploy/man/gen_man.py
    COMMENT "Man pages from rbdvault --help")
  add_custom_target(man_pages ALL DEPENDS ${RBDVAULT_MAN_DIR}/rbdvault.8)
  install(DIRECTORY ${RBDVAULT_MAN_DIR}/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 FILES_MATCHING PATTERN "*.8")
else()
  message(STATUS "help2man or python3 not found: no man pages (deploy/install-deps.sh installs them)")
endif()

install(FILES ${PROJECT_SOURCE_DIR}/deploy/completion/rbdvault
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/tmpfiles/rbdvault.conf DESTINATION lib/tmpfiles.d)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/rbdvault.conf.example ${PROJECT_SOURCE_DIR}/docs/usage.md
              ${PROJECT_SOURCE_DIR}/docs/operations.md ${PROJECT_SOURCE_DIR}/docs/format.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/monitoring/ DESTINATION ${CMAKE_INSTALL_DATADIR}/rbdvault/monitoring
        FILES_MATCHING PATTERN "*.json" PATTERN "*.yml")
# Snapshot hook examples (docs/operations.md "Hooks"), referenced from the config by full path.
install(PROGRAMS ${PROJECT_SOURCE_DIR}/deploy/hooks/libvirt-fsfreeze ${PROJECT_SOURCE_DIR}/deploy/hooks/proxmox-fsfreeze
        DESTINATION ${CMAKE_INSTALL_DATADIR}/rbdvault/hooks)

# The units name the binary; they say /usr/local/bin/rbdvault for a copy by hand and get the
# install prefix's path here. With prefix /usr (the package) they go to /lib/systemd/system.
foreach(unit rbdvault-agent.service rbdvault-run.service rbdvault-run.timer)
  install(CODE "
    set(bindir \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
    set(unitdir \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
    if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
      set(unitdir /lib/systemd/system)
    endif()
    file(READ \"${PROJECT_SOURCE_DIR}/deploy/systemd/${unit}\" text)
    string(REPLACE \"/usr/local/bin/rbdvault\" \"\${bindir}/rbdvault\" text \"\${text}\")
    message(STATUS \"Installing: \$ENV{DESTDIR}\${unitdir}/${unit}\")
    file(WRITE \"\$ENV{DESTDIR}\${unitdir}/${unit}\" \"\${text}\")")
endforeach()
