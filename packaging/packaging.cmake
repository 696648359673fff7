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

# libtorch 2.x comes from PyPI's torch wheel, which no Debian package provides: the programs go to
# lib/cushion-studio/ and bin/ holds a launcher each (packaging/launcher.sh.in) that finds the user's torch
# (python3 -c 'import torch', or CUSHION_TORCH_LIB) and runs them with its libraries. Installed binaries must
# not point into the build tree: the build RPATH is removed at install, none is taken from the link path.
# The package test checks both.
set(CUSHION_PRIVATE_DIR "lib/cushion-studio")
foreach(t cushion cushion-studio)
  if(TARGET ${t})
    set_target_properties(${t} PROPERTIES INSTALL_RPATH "" INSTALL_RPATH_USE_LINK_PATH OFF)
    install(TARGETS ${t} RUNTIME DESTINATION ${CUSHION_PRIVATE_DIR})
    set(CUSHION_LAUNCHED ${t})
    set(CUSHION_TORCH_VERSION ${Torch_VERSION})
    configure_file(${CMAKE_CURRENT_LIST_DIR}/launcher.sh.in ${CMAKE_BINARY_DIR}/launchers/${t} @ONLY)
    install(PROGRAMS ${CMAKE_BINARY_DIR}/launchers/${t} DESTINATION bin)
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
default model, Karpathy's stories260K (MIT). It runs on PyTorch ${Torch_VERSION}
from PyPI (python3 -m pip install torch==${Torch_VERSION}), found at start-up.")
set(CPACK_PACKAGE_INSTALL_DIRECTORY "cushion-studio")
set(CPACK_STRIP_FILES ON)  # RelWithDebInfo binaries are ~60 MB each with debug info, ~3 MB without
set(CPACK_SOURCE_IGNORE_FILES "/build/;/build-.*/;/\\\\.git/;/out/;__pycache__")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # cushion-studio_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION "science")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
# Dependencies, written out for Debian 12 (dpkg-shlibdeps cannot be used: libtorch and the CUDA libraries come
# from the user's torch wheel, not from Debian packages): python3 for the launcher to find torch, the C/C++
# runtime, and with the GUI Qt 6, stb and libgl1 (the ImGui OpenGL 3 backend loads libGL.so.1 itself).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "python3, libc6 (>= 2.35), libgcc-s1, libstdc++6 (>= 12)")
if(CUSHION_GUI)
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS
    ", libqt6core6 (>= 6.4), libqt6gui6, libqt6widgets6, libqt6opengl6, libqt6charts6, libstb0, libgl1")
endif()

include(CPack)

# ---- Test: build the package, extract it into a scratch root, run the tools from there (label `package`).
if(CUSHION_TESTS)
  add_test(NAME package_deb
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/test_package.sh ${CMAKE_BINARY_DIR} $<BOOL:${CUSHION_GUI}>)
  set_tests_properties(package_deb PROPERTIES LABELS package TIMEOUT 600 RUN_SERIAL ON
    ENVIRONMENT "CUSHION_PYTHON=${CUSHION_PYTHON}")
endif()
