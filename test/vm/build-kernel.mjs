#!/usr/bin/env node
// Builds the VM tier's two kernels from Debian's linux-source-6.12: "unpatched" (the source as
// packaged) and "patched" (the project's backport in test/vm/patches/ applied), both with
// `make allnoconfig` + test/vm/kernel.config. When both are needed they come from one extracted
// tree: the unpatched kernel first, then the patches are applied and make rebuilds only what
// they touch. Each bzImage is cached under a key hashing the patches (patched only), the config
// fragment, the source package version and this recipe: a warm run costs nothing and any change
// to one of them rebuilds.
//
//   node test/vm/build-kernel.mjs [patched|unpatched ...] [--force] [--keep-build]
//
// Prints one line per stage with the elapsed time, and while compiling a progress line every
// 30 s. Exits non-zero, loudly, when a package cannot be installed, a patch does not apply
// (checked on a copy of the pristine files before anything is compiled), an option of the
// fragment did not stick, or the compiler fails (last lines of the log shown).
// Environment: FUSEKEEPER_VM_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/fusekeeper/vm),
// FUSEKEEPER_VM_PATCHES (default test/vm/patches).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync, createWriteStream } from 'node:fs';
import { cpus, homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const SOURCE_PACKAGE = 'linux-source-6.12';
export const SOURCE_TARBALL = `/usr/src/${SOURCE_PACKAGE}.tar.xz`;
/** The backport; FUSEKEEPER_VM_PATCHES points elsewhere to try a changed one. */
export const PATCH_DIR = process.env.FUSEKEEPER_VM_PATCHES || join(here, 'patches');
export const CONFIG_FRAGMENT = join(here, 'kernel.config');
/** Bump when the way a kernel is built changes in a way the inputs below do not show. */
const RECIPE = 'fusekeeper-vm-kernel-v2: allnoconfig+fragment, make bzImage, patched built incrementally after unpatched';
/** Debian packages the VM tier needs: the source, the toolchain the kernel build uses, qemu. */
export const PACKAGES = [SOURCE_PACKAGE, 'gcc', 'libc6-dev', 'make', 'flex', 'bison', 'bc', 'libelf-dev', 'libssl-dev', 'xz-utils', 'patch', 'qemu-system-x86'];
export const VARIANTS = ['patched', 'unpatched'];

export function cacheDir() {
  if (process.env.FUSEKEEPER_VM_CACHE) return process.env.FUSEKEEPER_VM_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'fusekeeper', 'vm');
}

const started = Date.now();
/** `vm: [ 12.3s] message` */
export function stage(msg) {
  const s = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`vm: [${s}s] ${msg}`);
}

export class BuildError extends Error {}

function fail(msg) {
  throw new BuildError(msg);
}

function installedVersion(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}\t${Version}', pkg], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const [status, version] = r.stdout.split('\t');
  return status === 'install ok installed' ? version : null;
}

/**
 * Why the VM tier cannot run here, or null. It can whenever it can get its packages: as root
 * on Debian (installed on demand), or with all of them installed already. FUSEKEEPER_VM=0
 * turns the tier off (a skip locally, a failure under CI=true like any missing requirement).
 */
export function vmRequirements() {
  if (process.env.FUSEKEEPER_VM === '0') return 'turned off with FUSEKEEPER_VM=0';
  if (process.arch !== 'x64') return `builds and boots an x86_64 kernel; this is ${process.arch}`;
  if (spawnSync('dpkg-query', ['--version'], { stdio: 'ignore' }).status !== 0) return 'needs Debian (dpkg/apt) for linux-source-6.12 and qemu-system-x86';
  const missing = PACKAGES.filter((p) => installedVersion(p) === null);
  if (missing.length && process.getuid?.() !== 0) return `packages missing (${missing.join(' ')}): run as root (they are installed on demand) or apt-get install them`;
  return null;
}

/** Installs whichever of PACKAGES is missing (apt-get update first). Needs root then. */
export function ensurePackages() {
  const missing = PACKAGES.filter((p) => installedVersion(p) === null);
  if (missing.length === 0) {
    stage(`packages: all ${PACKAGES.length} present (${SOURCE_PACKAGE} ${installedVersion(SOURCE_PACKAGE)})`);
    return;
  }
  if (process.getuid?.() !== 0) fail(`packages missing (${missing.join(' ')}) and not root: run as root, or apt-get install them`);
  stage(`packages: installing ${missing.join(' ')} ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...missing]]) {
    const r = spawnSync('apt-get', args, { env, encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.status !== 0) fail(`apt-get ${args.join(' ')} failed (${r.status}):\n${(r.stdout + r.stderr).slice(-4000)}`);
  }
  const still = PACKAGES.filter((p) => installedVersion(p) === null);
  if (still.length) fail(`still missing after apt-get install: ${still.join(' ')}`);
  stage(`packages: installed (${SOURCE_PACKAGE} ${installedVersion(SOURCE_PACKAGE)})`);
}

/** The patch files, in the order they are applied. */
export function patchFiles() {
  const files = readdirSync(PATCH_DIR).filter((f) => f.endsWith('.patch')).sort();
  if (files.length === 0) fail(`no patches in ${PATCH_DIR}`);
  return files.map((f) => join(PATCH_DIR, f));
}

/** `{ option: value }` of every `CONFIG_X=value` line of the fragment. */
export function fragmentOptions() {
  const opts = {};
  for (const line of readFileSync(CONFIG_FRAGMENT, 'utf8').split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) opts[m[1]] = m[2];
  }
  return opts;
}

/** Cache key of a variant: patches (patched only) + fragment + source version + recipe. */
export function variantKey(variant, sourceVersion) {
  const h = createHash('sha256');
  h.update(`${RECIPE}\0${SOURCE_PACKAGE}=${sourceVersion}\0${variant}\0`);
  h.update(readFileSync(CONFIG_FRAGMENT));
  if (variant === 'patched') {
    for (const p of patchFiles()) h.update(`\0${p.split('/').pop()}\0`).update(readFileSync(p));
  }
  return h.digest('hex').slice(0, 16);
}

/** Where the cached bzImage of `variant` lives (whether it exists or not). */
export function imagePath(variant, sourceVersion = installedVersion(SOURCE_PACKAGE)) {
  if (!sourceVersion) fail(`${SOURCE_PACKAGE} is not installed`);
  return join(cacheDir(), 'images', `${variant}-${variantKey(variant, sourceVersion)}.bzImage`);
}

/** Runs a command with its output going to `log`; resolves its exit code. Heartbeat while it runs. */
function runLogged(cmd, args, opts, log, heartbeat) {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(log, { flags: 'a' });
    out.write(`\n$ ${cmd} ${args.join(' ')}\n`);
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(out, { end: false });
    child.stderr.pipe(out, { end: false });
    const timer = heartbeat ? setInterval(heartbeat, 30_000) : null;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearInterval(timer);
      out.end(() => resolve(code ?? (signal ? 128 : 1)));
    });
  });
}

function tail(file, lines) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function countObjects(dir) {
  const r = spawnSync('find', [dir, '-name', '*.o', '-newer', join(dir, '.config')], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return r.stdout ? r.stdout.split('\n').filter(Boolean).length : 0;
}

/** Compares the final .config with the fragment; returns the options that did not stick. */
export function configMismatches(dotConfig) {
  const final = new Map();
  for (const line of readFileSync(dotConfig, 'utf8').split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m) final.set(m[1], m[2]);
  }
  return Object.entries(fragmentOptions())
    .filter(([k, v]) => final.get(k) !== v)
    .map(([k, v]) => `${k}=${v} (got ${final.has(k) ? `${k}=${final.get(k)}` : 'not set'})`);
}

/** Paths (relative to the tree) every patch touches, from its `+++ b/...` lines. */
function patchedPaths() {
  const paths = new Set();
  for (const p of patchFiles()) {
    for (const m of readFileSync(p, 'utf8').matchAll(/^\+\+\+ b\/(\S+)/gm)) paths.add(m[1]);
  }
  return [...paths];
}

/** Applies every patch in `dir` with `patch -p1 --forward --fuzz=0`; throws loudly on the first that fails. */
function applyPatches(dir, version, what) {
  for (const p of patchFiles()) {
    const name = p.split('/').pop();
    const r = spawnSync('patch', ['-p1', '--forward', '--fuzz=0', '--batch', '--no-backup-if-mismatch', '-i', p], { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) {
      fail(
        `PATCH DOES NOT APPLY: ${name} to ${SOURCE_PACKAGE} ${version} (${what}; patch exit ${r.status}).\n` +
        `${(r.stdout + r.stderr).trim()}\n` +
        `The backport in ${PATCH_DIR} must be updated for this source version.`,
      );
    }
    stage(`patched: applied ${name}${what === 'check' ? ' (check on a copy of the pristine files)' : ''}`);
  }
}

/**
 * Checks, before minutes of compiling, that the patches apply to the pristine tree `src`: the
 * files they touch are copied to a scratch dir and patched there.
 */
function checkPatchesApply(src, version, scratch) {
  rmSync(scratch, { recursive: true, force: true });
  for (const rel of patchedPaths()) {
    const from = join(src, rel);
    if (!existsSync(from)) fail(`PATCH DOES NOT APPLY: ${rel} does not exist in ${SOURCE_PACKAGE} ${version}`);
    mkdirSync(dirname(join(scratch, rel)), { recursive: true });
    copyFileSync(from, join(scratch, rel));
  }
  try {
    applyPatches(scratch, version, 'check');
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function variantEnv(variant) {
  return {
    ...process.env,
    KBUILD_BUILD_TIMESTAMP: '2026-01-01',
    KBUILD_BUILD_USER: 'fusekeeper',
    KBUILD_BUILD_HOST: `vm-${variant}`,
    LOCALVERSION: `-fusekeeper-${variant}`,
  };
}

/**
 * Builds `variants` (not cached) in one extracted tree: the unpatched kernel first, from the
 * pristine source; then the patches are applied to the same tree and `make` rebuilds what they
 * touch (fs/fuse and the version files, seconds instead of minutes). Kbuild's dependency
 * tracking makes that the same kernel as a clean patched build. Returns `{ variant: path }`.
 */
async function buildTree(variants, version, { keepBuild = false } = {}) {
  const order = ['unpatched', 'patched'].filter((v) => variants.includes(v));
  const keys = Object.fromEntries(order.map((v) => [v, variantKey(v, version)]));
  const cache = cacheDir();
  const tag = order.map((v) => `${v}-${keys[v]}`).join('+');
  const buildRoot = join(cache, 'build', tag);
  const log = join(cache, 'build', `${tag}.log`);
  rmSync(buildRoot, { recursive: true, force: true });
  rmSync(log, { force: true });
  mkdirSync(buildRoot, { recursive: true });
  const t0 = Date.now();
  const what = order.join(' + ');

  stage(`${what}: extracting ${SOURCE_PACKAGE} ${version} (log ${log}) ...`);
  if ((await runLogged('tar', ['-xf', SOURCE_TARBALL, '-C', buildRoot], {}, log)) !== 0) fail(`extracting ${SOURCE_TARBALL} failed:\n${tail(log, 20)}`);
  const src = join(buildRoot, SOURCE_PACKAGE);
  if (!existsSync(join(src, 'Makefile'))) fail(`${SOURCE_TARBALL} did not contain ${SOURCE_PACKAGE}/Makefile`);
  if (order.includes('patched')) {
    stage(`patched: checking that ${patchFiles().length} patches apply to the pristine tree ...`);
    checkPatchesApply(src, version, join(buildRoot, 'patch-check'));
  }

  stage(`${what}: configuring (make allnoconfig + ${CONFIG_FRAGMENT.split('/').slice(-3).join('/')}) ...`);
  if ((await runLogged('make', ['allnoconfig', `KCONFIG_ALLCONFIG=${CONFIG_FRAGMENT}`], { cwd: src, env: variantEnv(order[0]) }, log)) !== 0) {
    fail(`make allnoconfig failed:\n${tail(log, 40)}`);
  }
  const verify = (v) => {
    const mismatches = configMismatches(join(src, '.config'));
    if (mismatches.length) fail(`CONFIG OPTIONS DID NOT STICK in the ${v} build (a dependency is missing from ${CONFIG_FRAGMENT}):\n  ${mismatches.join('\n  ')}`);
  };
  verify(order[0]);
  stage(`${what}: config verified (${Object.keys(fragmentOptions()).length} options stuck)`);

  const images = {};
  const jobs = String(cpus().length || 1);
  let previous = null;
  for (const v of order) {
    if (v === 'patched' && previous) {
      stage('patched: applying the patches to the tree the unpatched kernel was built in ...');
      applyPatches(src, version, 'build');
    } else if (v === 'patched') {
      stage('patched: applying the patches ...');
      applyPatches(src, version, 'build');
    }
    const tc = Date.now();
    stage(`${v}: compiling (make -j${jobs} bzImage${previous ? `, incremental after ${previous}` : ''}) ...`);
    const code = await runLogged('make', [`-j${jobs}`, 'bzImage'], { cwd: src, env: variantEnv(v) }, log, () => {
      stage(`${v}:   still compiling, ${countObjects(src)} objects so far (${((Date.now() - tc) / 1000).toFixed(0)}s)`);
    });
    if (code !== 0) fail(`COMPILE FAILED for ${v} (make exit ${code}); last lines of ${log}:\n${tail(log, 60)}`);
    verify(v);
    const built = join(src, 'arch/x86/boot/bzImage');
    if (!existsSync(built)) fail(`make succeeded but ${built} is missing`);
    const release = readFileSync(join(src, 'include/config/kernel.release'), 'utf8').trim();
    if (!release.endsWith(`-fusekeeper-${v}`)) fail(`built kernel release ${release} does not name the ${v} variant`);
    const image = imagePath(v, version);
    mkdirSync(dirname(image), { recursive: true });
    copyFileSync(built, `${image}.tmp`);
    copyFileSync(join(src, '.config'), image.replace(/\.bzImage$/, '.config'));
    writeFileSync(image.replace(/\.bzImage$/, '.json'), `${JSON.stringify({
      variant: v, key: keys[v], source: `${SOURCE_PACKAGE} ${version}`,
      patches: v === 'patched' ? patchFiles().map((p) => p.split('/').pop()) : [],
      kernelRelease: release, incrementalAfter: previous, compileSeconds: Math.round((Date.now() - tc) / 1000),
      builtAt: new Date().toISOString(),
    }, null, 2)}\n`);
    renameSync(`${image}.tmp`, image);
    images[v] = image;
    stage(`${v}: built ${image} (${(statSync(image).size / 1048576).toFixed(1)} MiB, compile ${((Date.now() - tc) / 1000).toFixed(0)}s)`);
    previous = v;
  }
  if (keepBuild) stage(`build tree kept in ${src}`);
  else rmSync(buildRoot, { recursive: true, force: true });
  stage(`${what}: done in ${((Date.now() - t0) / 1000).toFixed(0)}s`);
  return images;
}

/** Installs packages and builds (or finds cached) every requested variant; returns `{ variant: path }`. */
export async function buildKernels(variants = VARIANTS, { force = false, keepBuild = false } = {}) {
  ensurePackages();
  const version = installedVersion(SOURCE_PACKAGE);
  if (!version) fail(`${SOURCE_PACKAGE} is not installed`);
  if (!existsSync(SOURCE_TARBALL)) fail(`${SOURCE_TARBALL} is missing although ${SOURCE_PACKAGE} is installed`);
  const images = {};
  const todo = [];
  for (const v of variants) {
    if (!VARIANTS.includes(v)) fail(`unknown variant ${v}`);
    const p = imagePath(v, version);
    if (!force && existsSync(p)) {
      stage(`${v}: cached ${p}`);
      images[v] = p;
    } else {
      todo.push(v);
    }
  }
  if (todo.length) Object.assign(images, await buildTree(todo, version, { keepBuild }));
  return images;
}

async function main(argv) {
  const force = argv.includes('--force');
  const keepBuild = argv.includes('--keep-build');
  const variants = argv.filter((a) => !a.startsWith('--'));
  for (const v of variants) if (!VARIANTS.includes(v)) fail(`unknown variant ${v} (${VARIANTS.join(', ')})`);
  stage(`building kernels: ${(variants.length ? variants : VARIANTS).join(', ')} (cache ${cacheDir()})`);
  const images = await buildKernels(variants.length ? variants : VARIANTS, { force, keepBuild });
  for (const [v, p] of Object.entries(images)) console.log(`${v}\t${p}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((err) => {
    if (err instanceof BuildError) {
      console.error(`vm: BUILD FAILED: ${err.message}`);
      process.exit(1);
    }
    throw err;
  });
}
