// Background blur, in the browser: MediaPipe's selfie segmentation model and its WebAssembly
// runtime (npm @mediapipe/selfie_segmentation, Apache-2.0, vendored in
// static/vendor/@mediapipe/selfie_segmentation/: nothing is fetched from anywhere else).
// Loaded only when someone turns blur on; off by default.
//
// BlurProcessor reads a camera track, finds the person in each frame, and draws the frame on a
// canvas with everything else blurred; its `output` track (the canvas's stream) is what is
// published and shown in place of the camera.

const BASE = '/static/vendor/@mediapipe/selfie_segmentation/';
let loading = null;

// The runtime needs WebAssembly SIMD (the vendored build) and canvas capture.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0,
  10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);
export function blurSupported() {
  try {
    return typeof WebAssembly === 'object' && WebAssembly.validate(SIMD_PROBE)
      && typeof HTMLCanvasElement.prototype.captureStream === 'function';
  } catch {
    return false;
  }
}

function loadLibrary() {
  if (window.SelfieSegmentation) return Promise.resolve();
  loading ||= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `${BASE}selfie_segmentation.js`;
    script.onload = () => resolve();
    script.onerror = () => { loading = null; reject(new Error('the blur library did not load')); };
    document.head.append(script);
  });
  return loading;
}

export class BlurProcessor {
  // Resolves once the first blurred frame is drawn.
  static async create(track, { fps = 15, radius = 14 } = {}) {
    await loadLibrary();
    const processor = new BlurProcessor(track, fps, radius);
    await processor.start();
    return processor;
  }

  constructor(track, fps, radius) {
    this.input = track;
    this.fps = fps;
    this.radius = radius;
    this.stopped = false;
    this.frames = 0;
    const settings = track.getSettings();
    const scale = Math.min(1, 960 / (settings.width || 640));
    this.canvas = document.createElement('canvas');
    this.canvas.width = Math.round((settings.width || 640) * scale);
    this.canvas.height = Math.round((settings.height || 480) * scale);
    this.ctx = this.canvas.getContext('2d');
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.playsInline = true;
    this.video.srcObject = new MediaStream([track]);
    this.segmenter = new window.SelfieSegmentation({ locateFile: (file) => `${BASE}${file}` });
    this.segmenter.setOptions({ modelSelection: 1, selfieMode: false }); // 1: the landscape model
    this.segmenter.onResults((results) => this.draw(results));
  }

  async start() {
    await this.video.play();
    let firstFrame;
    this.firstFrame = new Promise((resolve) => { firstFrame = resolve; });
    this.resolveFirst = firstFrame;
    this.output = this.canvas.captureStream(this.fps).getVideoTracks()[0];
    this.output.contentHint = 'motion';
    this.loop();
    const failed = new Promise((_, reject) => { this.fail = reject; });
    await Promise.race([this.firstFrame, failed]);
  }

  async loop() {
    while (!this.stopped) {
      const started = performance.now();
      try {
        if (this.video.readyState >= 2) await this.segmenter.send({ image: this.video });
      } catch (err) {
        this.fail?.(err);
        this.stop();
        return;
      }
      const wait = Math.max(5, 1000 / this.fps - (performance.now() - started));
      await new Promise((r) => { setTimeout(r, wait); });
    }
  }

  draw({ segmentationMask, image }) {
    if (this.stopped) return;
    const { ctx } = this;
    const { width: w, height: h } = this.canvas;
    ctx.save();
    ctx.clearRect(0, 0, w, h);
    ctx.drawImage(segmentationMask, 0, 0, w, h); // the person, as alpha
    ctx.globalCompositeOperation = 'source-in';
    ctx.drawImage(image, 0, 0, w, h); // the person, sharp
    ctx.globalCompositeOperation = 'destination-over';
    ctx.filter = `blur(${this.radius}px)`;
    ctx.drawImage(image, 0, 0, w, h); // everything else, blurred, behind
    ctx.restore();
    this.frames += 1;
    this.resolveFirst?.();
  }

  // Stops the processing and the output track; the input (camera) track is the caller's.
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.output?.stop();
    this.video.srcObject = null;
    this.segmenter.close?.().catch?.(() => {});
  }
}
