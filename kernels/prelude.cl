// GpuAttention kernel prelude: included before every op-family file.
// The same sources compile as OpenCL C 1.2 (clBuildProgram) and as CUDA C++ (NVRTC),
// CLBlast style: the CUDA backend defines CUDA before this file, and this prelude maps
// the OpenCL C words the kernels use onto CUDA.
//
// Words the kernels may use (and nothing else that differs between the two):
//   KERNEL                      a kernel entry point (void return)
//   INLINE                      a helper function
//   GLOBAL / LOCAL / CONSTANT   address spaces of pointer parameters and tile arrays
//   LOCAL_ARRAY(type, name, n)  a work-group shared array declared at kernel scope
//   BARRIER()                   work-group barrier with local memory fence
//   LID(d) GID(d) GRP(d) LSZ(d) NGRP(d)   local id, global id, group id, local size, group count
//   EXP LOG FMAX FMIN FABS SQRT FLOOR ROUND   float math
//   FMOD(a, b)                  C fmod (result has the sign of a); NAN_F a quiet NaN
//   NEG_INF, POS_INF            float infinities
//   int64 / uint64              64-bit integers for element offsets
//   ATOMIC_ADD_F(ptr, val)      *ptr += val on a GLOBAL float, atomically (unordered: nondeterministic sums)
#ifdef CUDA
  #define KERNEL extern "C" __global__ void
  #define INLINE __device__ __forceinline__
  #define GLOBAL
  #define LOCAL
  #define CONSTANT const
  #define RESTRICT __restrict__
  #define LOCAL_ARRAY(type, name, n) __shared__ type name[n]
  #define BARRIER() __syncthreads()
  #define LID(d) ((int)((d) == 0 ? threadIdx.x : (d) == 1 ? threadIdx.y : threadIdx.z))
  #define LSZ(d) ((int)((d) == 0 ? blockDim.x : (d) == 1 ? blockDim.y : blockDim.z))
  #define GRP(d) ((int)((d) == 0 ? blockIdx.x : (d) == 1 ? blockIdx.y : blockIdx.z))
  #define NGRP(d) ((int)((d) == 0 ? gridDim.x : (d) == 1 ? gridDim.y : gridDim.z))
  #define GID(d) (GRP(d) * LSZ(d) + LID(d))
  #define EXP(x) expf(x)
  #define LOG(x) logf(x)
  #define FMAX(a, b) fmaxf(a, b)
  #define FMIN(a, b) fminf(a, b)
  #define FABS(x) fabsf(x)
  #define SQRT(x) sqrtf(x)
  #define FLOOR(x) floorf(x)
  #define ROUND(x) rintf(x)
  #define FMOD(a, b) fmodf(a, b)
  #define NAN_F (__int_as_float(0x7fffffff))
  #define NEG_INF (-__int_as_float(0x7f800000))
  #define POS_INF (__int_as_float(0x7f800000))
  typedef long long int64;
  typedef unsigned long long uint64;
  #define ATOMIC_ADD_F(ptr, val) ((void)atomicAdd((ptr), (val)))
#else
  #define KERNEL __kernel void
  #define INLINE inline
  #define GLOBAL __global
  #define LOCAL __local
  #define CONSTANT __constant
  #define RESTRICT restrict
  #define LOCAL_ARRAY(type, name, n) __local type name[n]
  #define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
  #define LID(d) ((int)get_local_id(d))
  #define LSZ(d) ((int)get_local_size(d))
  #define GRP(d) ((int)get_group_id(d))
  #define NGRP(d) ((int)get_num_groups(d))
  #define GID(d) ((int)get_global_id(d))
  #define EXP(x) exp(x)
  #define LOG(x) log(x)
  #define FMAX(a, b) fmax(a, b)
  #define FMIN(a, b) fmin(a, b)
  #define FABS(x) fabs(x)
  #define SQRT(x) sqrt(x)
  #define FLOOR(x) floor(x)
  #define ROUND(x) rint(x)
  #define FMOD(a, b) fmod(a, b)
  #define NAN_F (NAN)
  #define NEG_INF (-INFINITY)
  #define POS_INF (INFINITY)
  typedef long int64;
  typedef ulong uint64;
  // OpenCL 1.2 has no float atomics: compare-and-swap on the int bits until no other work-item interfered.
  #define ATOMIC_ADD_F(ptr, val) do { \
      volatile GLOBAL int* ga_p_ = (volatile GLOBAL int*)(ptr); \
      const float ga_v_ = (val); \
      int ga_old_ = *ga_p_, ga_prev_; \
      do { ga_prev_ = ga_old_; \
           ga_old_ = atomic_cmpxchg(ga_p_, ga_prev_, as_int(as_float(ga_prev_) + ga_v_)); \
      } while (ga_old_ != ga_prev_); \
  } while (0)
#endif
