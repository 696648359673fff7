# Install rules and CPack (.deb) for CushionCache Studio. Included at the end of the top-level CMakeLists.txt.
#
#   cmake -S . -B build -G Ninja -DCMAKE_INSTALL_PREFIX=/usr && cmake --build build
#   cd build && cpack -G DEB            # -> cushion-studio_<version>_<arch>.deb
#
# The executables find their resources at <exe>/../share/cushion-studio (core/resources.cpp), so the
# layout below works for any prefix, and for a package extracted anywhere (dpkg -x).
# The `cushion` and `cushion-studio` targets carry their own install rules (app/, app/studio/).

include(GNUInstallDirs)

set(CUSHION_SHARE_DIR "${CMAKE_INSTALL_DATADIR}/cushion-studio")

# Installed binaries must not point into the build tree: the build RPATH (set when libtorch comes from a
# non-system prefix) is removed at install, and none is taken from the link path (Debian's libtorch and Qt
# are in the default search path). The package test checks the installed binaries for it.
foreach(t cushion cushion-studio)
  if(TARGET ${t})
    set_target_properties(${t} PROPERTIES INSTALL_RPATH "" INSTALL_RPATH_USE_LINK_PATH OFF)
  endif()
endforeach()

# Resources: the default model (with its licence) and the sample texts (with their provenance).
install(FILES
  ${CMAKE_SOURCE_DIR}/resources/models/stories260K/LICENSE
  ${CMAKE_SOURCE_DIR}/resources/models/stories260K/stories260K.bin
  ${CMAKE_SOURCE_DIR}/resources/models/stories260K/stories260K.gguf
  ${CMAKE_SOURCE_DIR}/resources/models/stories260K/tok512.bin
  ${CMAKE_SOURCE_DIR}/resources/models/stories260K/tok512.model
  DESTINATION ${CUSHION_SHARE_DIR}/models/stories260K)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/resources/text/
  DESTINATION ${CUSHION_SHARE_DIR}/text
  FILES_MATCHING PATTERN "*.txt" PATTERN "README.md")

# Desktop integration and the heatmap canvas's font (DejaVu Sans, with its licence): only with the GUI.
if(CUSHION_GUI)
  install(FILES
    ${CMAKE_SOURCE_DIR}/resources/fonts/DejaVuSans.ttf
    ${CMAKE_SOURCE_DIR}/resources/fonts/LICENSE
    ${CMAKE_SOURCE_DIR}/resources/fonts/README.md
    DESTINATION ${CUSHION_SHARE_DIR}/fonts)
  install(FILES ${CMAKE_CURRENT_LIST_DIR}/cushion-studio.desktop DESTINATION ${CMAKE_INSTALL_DATADIR}/applications)
  install(FILES ${CMAKE_CURRENT_LIST_DIR}/cushion-studio.svg
    DESTINATION ${CMAKE_INSTALL_DATADIR}/icons/hicolor/scalable/apps)
endif()

# ---- CPack: a Debian package --------------------------------------------------------------------------
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "cushion-studio")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "CushionCache Studio")
set(CUSHION_DEB_MAINTAINER "CushionCache Studio maintainers <cushion-studio@example.org>"
  CACHE STRING "Maintainer field of the .deb")
set(CPACK_PACKAGE_CONTACT "${CUSHION_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CUSHION_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "see and fix the activation outliers that break LLM activation quantization")
set(CPACK_PACKAGE_DESCRIPTION
  "CushionCache Studio loads a model (llama2.c .bin, GGUF or a Hugging Face
directory), runs it exactly, shows the activations that quantization touches,
searches and tunes a cushion (a prefix KV cache that absorbs the outliers) and
exports the quantized model with it. This package holds the command line tool
cushion, the desktop app cushion-studio (when built with the GUI) and the
default model, Karpathy's stories260K (MIT).")
set(CPACK_PACKAGE_INSTALL_DIRECTORY "cushion-studio")
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo binaries are ~60 MB each with debug info, ~3 MB without
set(CPACK_SOURCE_IGNORE_FILES "/build/;/build-.*/;/\\\\.git/;/out/;__pycache__")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # cushion-studio_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION "science")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# Linked libraries: dpkg-shlibdeps finds them (libtorch1.13, libqt6*, libstb0, libc6, ...) when it is
# there; otherwise the list Debian 12 needs is written out. Loaded at run time, not linked, so always named:
# libopenblas0-pthread (without it Debian's libtorch falls back to the ~20x slower reference BLAS) and,
# for the GUI, libgl1 (the ImGui OpenGL 3 backend loads libGL.so.1 itself).
set(CUSHION_DEB_RUNTIME_DEPENDS "libopenblas0-pthread")
if(CUSHION_GUI)
  string(APPEND CUSHION_DEB_RUNTIME_DEPENDS ", libgl1")
endif()
find_program(CUSHION_DPKG_SHLIBDEPS dpkg-shlibdeps)
mark_as_advanced(CUSHION_DPKG_SHLIBDEPS)
if(CUSHION_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "${CUSHION_DEB_RUNTIME_DEPENDS}")
else()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6 (>= 2.35), libgcc-s1, libstdc++6 (>= 11), libtorch1.13, ${CUSHION_DEB_RUNTIME_DEPENDS}")
  if(CUSHION_GUI)
    string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS
      ", libqt6core6 (>= 6.4), libqt6gui6, libqt6widgets6, libqt6opengl6, libqt6charts6, libstb0")
  endif()
endif()

include(CPack)

# ---- Test: build the package, extract it into a scratch root, run the tools from there (label `package`).
if(CUSHION_TESTS)
  add_test(NAME package_deb
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_package.sh ${CMAKE_BINARY_DIR} $<BOOL:${CUSHION_GUI}>)
  set_tests_properties(package_deb PROPERTIES LABELS package TIMEOUT 600 RUN_SERIAL ON)
endif()
