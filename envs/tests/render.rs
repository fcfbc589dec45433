//! `render`: frames of Gymnasium's sizes that follow the state.

use oxray_envs::{make, Env, EnvError};

/// The RGB value at column `x`, row `y` (row 0 at the top).
fn pixel(image: &oxray_envs::RgbImage, x: usize, y: usize) -> [u8; 3] {
    let at = (y * image.width + x) * 3;
    [image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]]
}

#[test]
fn every_env_renders_a_frame_of_gymnasiums_size() {
    for (id, size) in [
        ("CartPole-v1", (600, 400)),
        ("MountainCar-v0", (600, 400)),
        ("MountainCarContinuous-v0", (600, 400)),
        ("Pendulum-v1", (500, 500)),
        ("Acrobot-v1", (500, 500)),
    ] {
        let mut env = make(id).unwrap();
        assert!(
            matches!(env.render(), Err(EnvError::ResetNeeded { .. })),
            "{id}"
        );
        env.reset(Some(0), None).unwrap();
        let image = env.render().unwrap();
        assert_eq!((image.width, image.height), size, "{id}");
        assert_eq!(image.pixels.len(), size.0 * size.1 * 3);
        let drawn = image
            .pixels
            .chunks_exact(3)
            .filter(|p| *p != [255, 255, 255])
            .count();
        assert!(
            drawn > 500 && drawn < size.0 * size.1 / 4,
            "{id}: {drawn} pixels drawn"
        );
    }
}

#[test]
fn the_cart_is_drawn_where_the_state_puts_it() {
    let mut env = make("CartPole-v1").unwrap();
    env.reset(Some(0), None).unwrap();
    // 125 pixels per metre, the track centre at x = 300, the cart's centre
    // 100 pixels above the bottom (row 300 from the top).
    for (x, column) in [(0.0, 300), (1.0, 425), (-2.0, 50)] {
        env.set_state(&[x, 0.0, 0.0, 0.0]).unwrap();
        let image = env.render().unwrap();
        assert_eq!(pixel(&image, column, 305), [0, 0, 0], "cart at x = {x}");
        assert_eq!(
            pixel(&image, column + 40, 305),
            [255, 255, 255],
            "nothing beside the cart"
        );
        assert_eq!(
            pixel(&image, column, 250),
            [202, 152, 101],
            "upright pole above the cart"
        );
    }
}
