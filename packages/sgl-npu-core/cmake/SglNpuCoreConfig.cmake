# SglNpuCore: builds one sgl-npu wheel's kernels into a single `.so` against the LibTorch stable ABI.
#
#   find_package(SglNpuCore REQUIRED)
#   sgl_npu_add_op_library(_C
#       SOURCES csrc/registration.cpp csrc/ops/norm.cpp ...   # may include torch stable headers
#       KERNELS csrc/kernels/rmsnorm.cpp ...)                  # framework-free, built once per ISA
#
# KERNELS are compiled once per ISA variant (`generic`; on x86-64 also `avx2` = x86-64-v3 and, where the compiler
# knows it, `avx512` = x86-64-v4 + AVX512-BF16 on 256-bit vectors) with SGL_NPU_ISA naming the namespace; the
# ops pick a variant at run time (sgl_npu_core/isa.h).

if(NOT SKBUILD)
  message(WARNING "Build sgl-npu wheels with: pip install --no-build-isolation ./packages/<wheel> (or nox -s build)")
endif()

get_filename_component(SGL_NPU_CORE_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../../../include" ABSOLUTE)

if(NOT DEFINED SGL_NPU_TORCH_TARGET_VERSION)
  # torch 2.10: the oldest torch the wheels load into.
  set(SGL_NPU_TORCH_TARGET_VERSION "0x020a000000000000")
endif()

function(_sgl_npu_find_torch)
  if(DEFINED SGL_NPU_TORCH_INCLUDE_DIR)
    return()
  endif()
  find_package(Python REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
            "import os, torch; print(os.path.dirname(torch.__file__), end='')"
    OUTPUT_VARIABLE torch_dir
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "sgl-npu: torch must be importable by ${Python_EXECUTABLE} "
                        "(build with --no-build-isolation in an environment that has torch)")
  endif()
  set(SGL_NPU_TORCH_INCLUDE_DIR "${torch_dir}/include" CACHE PATH "torch headers")
  set(SGL_NPU_TORCH_LIB_DIR "${torch_dir}/lib" CACHE PATH "torch libraries")
endfunction()

function(_sgl_npu_kernel_objects target isa flags)
  set(objects ${target}_kernels_${isa})
  add_library(${objects} OBJECT ${ARGN})
  set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_VISIBILITY_PRESET hidden)
  target_compile_features(${objects} PRIVATE cxx_std_17)
  target_include_directories(${objects} PRIVATE "${SGL_NPU_CORE_INCLUDE_DIR}" "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
  target_compile_definitions(${objects} PRIVATE SGL_NPU_ISA=${isa})
  # -fno-math-errno lets rintf/sqrtf become single instructions; no -ffast-math: NaN/Inf must survive.
  target_compile_options(${objects} PRIVATE -O3 -fno-math-errno -Wno-psabi ${flags})
  target_sources(${target} PRIVATE $<TARGET_OBJECTS:${objects}>)
endfunction()

function(sgl_npu_add_op_library target)
  cmake_parse_arguments(ARG "" "" "SOURCES;KERNELS" ${ARGN})
  _sgl_npu_find_torch()
  add_library(${target} MODULE ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES PREFIX "" CXX_VISIBILITY_PRESET hidden)
  target_compile_features(${target} PRIVATE cxx_std_17)
  target_include_directories(${target} PRIVATE "${SGL_NPU_CORE_INCLUDE_DIR}" "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
  target_include_directories(${target} SYSTEM PRIVATE "${SGL_NPU_TORCH_INCLUDE_DIR}")
  target_compile_definitions(${target} PRIVATE TORCH_TARGET_VERSION=${SGL_NPU_TORCH_TARGET_VERSION})
  target_compile_options(${target} PRIVATE -O2 -Wall -Wno-psabi)
  # The stable C shim lives in libtorch_cpu; torch has already loaded it when the op library loads.
  find_library(SGL_NPU_TORCH_CPU torch_cpu PATHS "${SGL_NPU_TORCH_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  find_library(SGL_NPU_C10 c10 PATHS "${SGL_NPU_TORCH_LIB_DIR}" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(${target} PRIVATE "${SGL_NPU_TORCH_CPU}" "${SGL_NPU_C10}")
  set_target_properties(${target} PROPERTIES SKIP_BUILD_RPATH ON INSTALL_RPATH "")

  _sgl_npu_kernel_objects(${target} generic "" ${ARG_KERNELS})
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(avx2_flags "-mavx2;-mfma;-mf16c")
    _sgl_npu_kernel_objects(${target} avx2 "${avx2_flags}" ${ARG_KERNELS})
    target_compile_definitions(${target} PRIVATE SGL_NPU_HAVE_AVX2=1)
    # The kernels keep 8-wide fp32 vectors (vec.h); AVX-512 adds one-instruction bf16 rounding, masks and 32
    # registers. 256-bit preferred so auto-vectorized loops do not move to zmm and their frequency cost.
    set(avx512_flags ${avx2_flags} -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mprefer-vector-width=256)
    include(CheckCXXCompilerFlag)
    string(REPLACE ";" " " avx512_flag_string "${avx512_flags}")
    check_cxx_compiler_flag("${avx512_flag_string}" SGL_NPU_COMPILER_HAS_AVX512_BF16)
    if(SGL_NPU_COMPILER_HAS_AVX512_BF16)
      _sgl_npu_kernel_objects(${target} avx512 "${avx512_flags}" ${ARG_KERNELS})
      target_compile_definitions(${target} PRIVATE SGL_NPU_HAVE_AVX512=1)
    endif()
  endif()
endfunction()
