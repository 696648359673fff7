// The target that owns the precompiled header the engine shares (core/CMakeLists.txt).
