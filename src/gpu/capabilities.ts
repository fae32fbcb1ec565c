import { GantryError } from '../errors.js';

/**
 * NVIDIA_DRIVER_CAPABILITIES: which parts of the driver a sandbox receives, as the NVIDIA
 * container toolkit defines them. Each capability selects driver libraries (by soname prefix),
 * binaries, device nodes and configuration files; the lists follow libnvidia-container's.
 */
export const CAPABILITIES = ['compute', 'compat32', 'display', 'graphics', 'ngx', 'utility', 'video'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** The toolkit's and enroot's default when an image says nothing: nvidia-smi and NVML only. */
export const DEFAULT_CAPABILITIES = 'utility';

export function parseCapabilities(value: string | undefined): Set<Capability> {
  const text = (value ?? '').trim() || DEFAULT_CAPABILITIES;
  const caps = new Set<Capability>();
  for (const raw of text.split(',')) {
    const cap = raw.trim();
    if (!cap) continue;
    if (cap === 'all') return new Set(CAPABILITIES);
    if (!(CAPABILITIES as readonly string[]).includes(cap)) {
      throw new GantryError('USAGE', `unknown NVIDIA driver capability "${cap}" in NVIDIA_DRIVER_CAPABILITIES=${text}`, `use a comma-separated list of ${CAPABILITIES.join(', ')}, or all`);
    }
    caps.add(cap as Capability);
  }
  return caps;
}

/** Libraries by the name before `.so`; the version-suffixed file must carry the driver's version. */
export const LIBRARIES: Record<Capability, string[]> = {
  utility: ['libnvidia-ml', 'libnvidia-cfg', 'libnvidia-nscq'],
  compute: [
    'libcuda',
    'libcudadebugger',
    'libnvidia-opencl',
    'libnvidia-gpucomp',
    'libnvidia-ptxjitcompiler',
    'libnvidia-fatbinaryloader',
    'libnvidia-allocator',
    'libnvidia-compiler',
    'libnvidia-pkcs11',
    'libnvidia-pkcs11-openssl3',
    'libnvidia-nvvm',
  ],
  video: ['libvdpau_nvidia', 'libnvidia-encode', 'libnvidia-opticalflow', 'libnvcuvid'],
  graphics: [
    'libnvidia-eglcore',
    'libnvidia-glcore',
    'libnvidia-tls',
    'libnvidia-glsi',
    'libnvidia-fbc',
    'libnvidia-ifr',
    'libnvidia-rtcore',
    'libnvoptix',
    'libGLX_nvidia',
    'libEGL_nvidia',
    'libGLESv2_nvidia',
    'libGLESv1_CM_nvidia',
    'libnvidia-glvkspirv',
    'libnvidia-cbl',
  ],
  ngx: ['libnvidia-ngx'],
  display: [],
  compat32: [],
};

export const BINARIES: Record<Capability, string[]> = {
  utility: ['nvidia-smi', 'nvidia-debugdump', 'nvidia-persistenced'],
  compute: ['nvidia-cuda-mps-control', 'nvidia-cuda-mps-server'],
  video: [],
  graphics: [],
  ngx: [],
  display: [],
  compat32: [],
};

/** Vendor files the loaders look for (OpenCL ICD, GLVND EGL vendor, Vulkan ICD). */
export const CONFIG_FILES: Record<Capability, string[]> = {
  compute: ['/etc/OpenCL/vendors/nvidia.icd'],
  graphics: [
    '/usr/share/glvnd/egl_vendor.d/10_nvidia.json',
    '/usr/share/vulkan/icd.d/nvidia_icd.json',
    '/etc/vulkan/icd.d/nvidia_icd.json',
    '/usr/share/vulkan/implicit_layer.d/nvidia_layers.json',
    '/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json',
  ],
  utility: [],
  video: [],
  ngx: [],
  display: [],
  compat32: [],
};
