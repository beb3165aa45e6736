"""One config per row of the course project's results table: FCN, ResNet + deconv, U-Net,
U-Net + ASPP, ResNet + ASPP, FCN + dice, FCN + weighted CE, FCN + augmentation."""
