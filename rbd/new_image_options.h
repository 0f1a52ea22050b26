// librbd image options for a new image from NewImageOptions: one rule for the images a restore
// creates itself (ImageWriter) and the targets it prepares as migrations (ImportMigration).
// Internal to rbd/ (includes librbd).
#pragma once

#include <rbd/librbd.hpp>

#include "rbd/image_writer.h"

namespace rbdvault::rbd {

// Sets order and features (only those a new image can always have: layering, exclusive-lock,
// object-map, fast-diff, deep-flatten; journaling and mirroring need cluster setup a restore must
// not assume). Zero fields keep the cluster defaults. Throws CephError.
void set_new_image_options(librbd::ImageOptions& opts, const NewImageOptions& options);

}  // namespace rbdvault::rbd
