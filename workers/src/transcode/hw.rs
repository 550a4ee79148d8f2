//! VAAPI frame upload: `h264_vaapi` encodes only frames in GPU surfaces, so
//! software frames are copied into a VAAPI frames pool first. ffmpeg-next
//! does not wrap hardware frames; this is the small unsafe part.

use std::ptr;

use ff::ffi;
use ffmpeg_next as ff;

/// A VAAPI device and frames pool of one size.
pub struct VaapiUpload {
    device: *mut ffi::AVBufferRef,
    frames: *mut ffi::AVBufferRef,
}

// SAFETY: the two AVBufferRefs are reference-counted with atomic counts
// (FFmpeg's buffers are thread-safe to ref and unref); a VaapiUpload is moved
// whole into the one thread that encodes its rung and is used only there.
unsafe impl Send for VaapiUpload {}

impl VaapiUpload {
    /// Opens the default VAAPI device (`/dev/dri/renderD128`) and a pool of
    /// `width` x `height` NV12 surfaces.
    pub fn new(width: u32, height: u32) -> Result<Self, ff::Error> {
        let mut device = ptr::null_mut();
        // SAFETY: av_hwdevice_ctx_create writes a new reference into `device`
        // or leaves it null and returns an error.
        let ret = unsafe {
            ffi::av_hwdevice_ctx_create(
                &mut device,
                ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VAAPI,
                ptr::null(),
                ptr::null_mut(),
                0,
            )
        };
        if ret < 0 {
            return Err(ff::Error::from(ret));
        }
        // SAFETY: `device` is a valid device reference; the frames context it
        // returns is configured before av_hwframe_ctx_init, as FFmpeg requires.
        unsafe {
            let frames = ffi::av_hwframe_ctx_alloc(device);
            if frames.is_null() {
                ffi::av_buffer_unref(&mut device);
                return Err(ff::Error::Other {
                    errno: libc_enomem(),
                });
            }
            let ctx = (*frames).data as *mut ffi::AVHWFramesContext;
            (*ctx).format = ffi::AVPixelFormat::AV_PIX_FMT_VAAPI;
            (*ctx).sw_format = ffi::AVPixelFormat::AV_PIX_FMT_NV12;
            (*ctx).width = width as i32;
            (*ctx).height = height as i32;
            (*ctx).initial_pool_size = 16;
            let mut frames = frames;
            let ret = ffi::av_hwframe_ctx_init(frames);
            if ret < 0 {
                ffi::av_buffer_unref(&mut frames);
                ffi::av_buffer_unref(&mut device);
                return Err(ff::Error::from(ret));
            }
            Ok(Self { device, frames })
        }
    }

    /// Gives the encoder the frames pool it will receive surfaces from.
    pub fn attach(&self, encoder: &mut ff::encoder::video::Video) {
        // SAFETY: the encoder is not opened yet; it takes its own reference.
        unsafe {
            (*encoder.as_mut_ptr()).hw_frames_ctx = ffi::av_buffer_ref(self.frames);
        }
    }

    /// Copies a software NV12 frame into a new VAAPI surface.
    pub fn upload(&mut self, frame: &ff::frame::Video) -> Result<ff::frame::Video, ff::Error> {
        let mut surface = ff::frame::Video::empty();
        // SAFETY: both frames are valid; the surface gets a buffer from our
        // pool before the transfer, and props (pts, picture type) are copied.
        unsafe {
            let ret = ffi::av_hwframe_get_buffer(self.frames, surface.as_mut_ptr(), 0);
            if ret < 0 {
                return Err(ff::Error::from(ret));
            }
            let ret = ffi::av_hwframe_transfer_data(surface.as_mut_ptr(), frame.as_ptr(), 0);
            if ret < 0 {
                return Err(ff::Error::from(ret));
            }
            let ret = ffi::av_frame_copy_props(surface.as_mut_ptr(), frame.as_ptr());
            if ret < 0 {
                return Err(ff::Error::from(ret));
            }
        }
        Ok(surface)
    }
}

impl Drop for VaapiUpload {
    fn drop(&mut self) {
        // SAFETY: we own one reference to each.
        unsafe {
            ffi::av_buffer_unref(&mut self.frames);
            ffi::av_buffer_unref(&mut self.device);
        }
    }
}

fn libc_enomem() -> i32 {
    12
}
